"""A question read as one of the catalogue's templates, and its answer read back as asked (torch-free).

``diagecg.questions`` reads a typed question into a :class:`MatchedQuestion`: the template, the
*canonical* wording the model is asked, the findings named and how each was read, and the polarity.
A negated question ("Is there no AF?") is asked as the catalogue's own question and its answer and
option probabilities inverted (``diagecg.polarity``); :attr:`MatchedQuestion.answered` says which
question the answer answers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from diagecg.finding_names import FindingTerm
from diagecg.polarity import invert_answer, invert_probabilities
from diagecg.question_templates import NEGATED_TEXT, TEMPLATES, QuestionTemplate, QuestionType

__all__ = ["MatchedQuestion"]


@dataclasses.dataclass(frozen=True)
class MatchedQuestion:
    """A question read against the catalogue.

    Attributes:
        template_id, question_type: of the matched template.
        canonical: the template sentence with the attributes filled in (what the model is asked).
        attributes: the attribute values the question names.
        options: the answers it is decoded over. Verify and choose questions have a closed set (one
            of them is the answer); for a query it is the members an answer set may contain.
        negated: the question asks the negation of ``canonical`` ("Is there no AF?"): the model's
            answer to ``canonical`` is inverted (yes <-> no), and so are its option probabilities.
        terms: how each finding was read (name, synonym or spelling slip; same, broader or narrower).
        spelling: ``(typed, read as)`` for every word read as a misspelling.
    """

    template_id: int
    question_type: QuestionType
    canonical: str
    attributes: tuple[str, ...]
    options: tuple[str, ...]
    negated: bool = False
    terms: tuple[FindingTerm, ...] = ()
    spelling: tuple[tuple[str, str], ...] = ()

    @property
    def closed(self) -> bool:
        """Whether the answer is exactly one of ``options`` (verify and choose questions)."""
        return self.question_type.closed

    @property
    def template(self) -> QuestionTemplate:
        """The template it was read as, with its routing data (:data:`TEMPLATES`)."""
        return TEMPLATES[self.template_id]

    @property
    def finding(self) -> str | None:
        """The finding a yes/no question about one finding asks about (the named one, or the template's
        statement such as ``normal ecg``); None for any other question."""
        t = self.template
        if not t.one_finding:
            return None
        return t.statement if t.statement is not None else self.attributes[0]

    @property
    def polarity(self) -> str:
        """``"negated"`` or ``"positive"``."""
        return "negated" if self.negated else "positive"

    @property
    def scope(self) -> str:
        """``"same"``, or ``"broader"`` / ``"narrower"`` when a finding was read as one that covers more
        / less than was asked (the terms' notes say what the answer does not say)."""
        scopes = {t.scope for t in self.terms} - {"same"}
        return "same" if not scopes else ("broader" if "broader" in scopes else "narrower")

    @property
    def answered(self) -> str:
        """The question the answer answers: ``canonical``, or its negation."""
        if not self.negated:
            return self.canonical
        if self.template_id in NEGATED_TEXT:
            return NEGATED_TEXT[self.template_id]
        for a, b in (
            ("Does this ECG show symptoms of ", "Does this ECG show no symptoms of "),
            ("Does this ECG show any kind of ", "Does this ECG show no "),
            ("Does this ECG show any ", "Does this ECG show no "),
        ):
            if self.canonical.startswith(a):
                return b + self.canonical[len(a) :]
        return f"Not: {self.canonical}"

    def as_asked(self, model_answer: str) -> str:
        """The answer to the question as asked, from the model's answer to ``canonical``."""
        return invert_answer(model_answer) if self.negated else model_answer

    def probabilities_as_asked(self, probs: dict[str, float]) -> dict[str, float]:
        """Option probabilities for the question as asked (p(yes) and p(no) swapped when negated)."""
        return invert_probabilities(probs, self.options) if self.negated else dict(probs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "template_id": self.template_id,
            "question_type": self.question_type.value,
            "canonical": self.canonical,
            "attributes": list(self.attributes),
            "options": list(self.options),
            "polarity": self.polarity,
            "answered": self.answered,
            "scope": self.scope,
            "findings": [t.to_dict() for t in self.terms],
            "spelling": [list(p) for p in self.spelling],
        }

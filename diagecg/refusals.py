"""Why a question gets no answer, and the supported questions nearest to it (torch-free).

When ``diagecg.questions`` cannot read a question as one the model was trained to answer, it returns a
:class:`Refusal`: a stable reason code (:data:`REFUSAL_REASONS`), one sentence naming what the question
asked for, and suggestions from :class:`Suggestions`: the yes/no questions about the findings it named
or about findings close to its words by name, else the catalogue's templates sharing most words with it.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from typing import Any

from diagecg.catalogue import Catalogue
from diagecg.finding_names import FindingTerm
from diagecg.question_templates import ATTRIBUTE, ATTRIBUTE1, ATTRIBUTE2, NEGATED_TEXT, TEMPLATES
from diagecg.question_text import FILLER, normalize_question

__all__ = ["REFUSAL_REASONS", "Refusal", "Suggestions"]

# why a question is refused (stable codes; the message says it in words)
REFUSAL_REASONS = {
    "empty": "the question is empty",
    "numeric": "it asks for a number or a measurement, which the model does not give",
    "unknown_finding": "it names a finding the model was not trained on",
    "more_specific": "it asks about a finding more specific than any the model was trained on",
    "no_such_finding": "it asks about something no finding of the model describes",
    "several_findings": "it asks about several findings at once",
    "negated_choice": "a negated choice between findings has no answer the model was trained to give",
    "negated_query": "a negated 'which findings' question has no answer the model was trained to give",
    "other_than": "it asks about findings other than the one it names",
    "not_understood": "it matches none of the questions this model was trained to answer",
}


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why a question gets no answer, and what could be asked instead.

    Attributes:
        reason: one of :data:`REFUSAL_REASONS` (stable).
        message: one sentence, naming what the question asked for.
        suggestions: supported questions nearest to it by name and meaning.
    """

    reason: str
    message: str
    suggestions: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "message": self.message, "suggestions": list(self.suggestions)}


class Suggestions:
    """The supported questions a refusal offers instead, from one catalogue.

    Args:
        catalogue: the templates and finding names suggestions are drawn from.
    """

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    def verify_question(self, finding: str, negated: bool = False) -> str:
        """The yes/no question about ``finding`` (or its negation): the record-level template asking
        about that statement, else the template about one named finding."""
        asks = next((t for t in TEMPLATES.values() if t.statement == finding), None)
        if asks is not None:
            return NEGATED_TEXT[asks.template_id] if negated else asks.text
        entry = self.catalogue.finding_entry()
        text = entry.render((finding,)) if entry is not None else finding
        return text.replace("show symptoms of", "show no symptoms of") if negated else text

    def nearby(self, text: str, terms: Sequence[FindingTerm], negated: bool = False) -> tuple[str, ...]:
        """The yes/no questions about the first findings read (``terms``), else :meth:`nearest`."""
        if terms:
            return tuple(self.verify_question(t.finding, negated) for t in terms[:3])
        return self.nearest(text)

    def nearest(self, text: str, k: int = 3) -> tuple[str, ...]:
        """Supported questions nearest to ``text``: findings close by name, else templates sharing words."""
        content = " ".join(w for w in normalize_question(text).split() if w not in FILLER)
        if content:
            forms = {f.text: f.finding for f in self.catalogue.names.forms if f.finding}
            close = difflib.get_close_matches(content, list(forms), n=12, cutoff=0.6)
            for word in content.split():
                close += difflib.get_close_matches(word, list(forms), n=4, cutoff=0.75)
            found: list[str] = []
            for c in close:
                if forms[c] not in found:
                    found.append(forms[c])
            if found:
                return tuple(self.verify_question(f) for f in found[:k])
        return self.by_template(text, k)

    def by_template(self, text: str, k: int = 3) -> tuple[str, ...]:
        """Up to ``k`` templates, filled with their first attribute values, sharing most words with
        ``text`` (ties by template id)."""
        words = set(normalize_question(text).split())
        scored = []
        for e in self.catalogue.entries.values():
            fill = e.attributes[:2] if e.attributes else ()
            try:
                example = e.render(fill[:1] if ATTRIBUTE in e.text else fill)
            except ValueError:
                continue
            other = set(
                normalize_question(
                    e.text.replace(ATTRIBUTE, "").replace(ATTRIBUTE1, "").replace(ATTRIBUTE2, "")
                ).split()
            )
            overlap = len(words & other) / (len(words | other) or 1)
            scored.append((-overlap, e.template_id, example))
        return tuple(ex for _, _, ex in sorted(scored)[:k])

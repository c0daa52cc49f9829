"""The single-ECG ECG-QA templates a bundle's model is trained on, and what each answer means
(torch-free).

Each :class:`QuestionTemplate` has its ECG-QA wording, its :class:`QuestionType`, the attribute group it
asks about, training paraphrases and held-out ones (kept for evaluation), and the routing data every
consumer reads instead of comparing template ids: what uncertain statements its wording counts, the
PTB-XL statement a record-level verify template asks about, ECG-QA's attribute for it, and whether its
answer needs the "any statement" warning. ``diagecg.datasets.ecgqa`` says where the wordings come from
and generates the questions, ``diagecg.questions`` reads free text against them, ``diagecg.statements``
and ``runtime.pipeline`` read the answers with them. :data:`SEMANTICS` says in words what each
record-level answer means under ECG-QA's labelling rules.

Adding a question type means a :class:`QuestionType` member, its templates in :data:`TEMPLATES`, and
the enum of ``question_type`` in ``diagecg/schemas/answer.schema.json`` (a test checks the two agree).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "ATTRIBUTE",
    "ATTRIBUTE1",
    "ATTRIBUTE2",
    "NEGATED_TEXT",
    "NONE_ANSWER",
    "NORMAL_ECG_TEMPLATE",
    "NORMAL_STATEMENT",
    "SEMANTICS",
    "TEMPLATES",
    "QuestionTemplate",
    "QuestionType",
    "fill_attributes",
    "finding_template",
]

ATTRIBUTE = "${attribute}"
ATTRIBUTE1, ATTRIBUTE2 = "${attribute1}", "${attribute2}"
NONE_ANSWER = "none"  # the answer of a choose or query question when no candidate is present
NORMAL_STATEMENT = "normal ecg"  # PTB-XL's NORM as ECG-QA names it: its presence is the absence of findings


class QuestionType(enum.StrEnum):
    """ECG-QA's type of a single-ECG question. The value is the string the manifest, the JSON answers
    (``matched_question.question_type``) and the datasets carry, so a member is written as that string."""

    VERIFY = "single-verify"  # yes / no (template 1 also "not sure")
    CHOOSE = "single-choose"  # one, both or none of two named findings
    QUERY = "single-query"  # the set of the group's findings present, or none

    @property
    def closed(self) -> bool:
        """Whether the answer is exactly one of the options, so the runtime scores the options (verify,
        choose) and a record's windows are combined by the strongest evidence of a finding; a query's
        answer is a set, decoded, and its windows' members are each confirmed."""
        return self is not QuestionType.QUERY


@dataclasses.dataclass(frozen=True)
class QuestionTemplate:
    """One single-ECG ECG-QA template the instruction data is generated from: its wording, the attribute
    group it asks about, its training paraphrases and the held-out ones (kept for evaluation), and how
    its questions are routed.

    Attributes:
        uncertain: what the wording says of uncertain statements: ``"included"`` ("including uncertain
            symptoms"), ``"excluded"`` ("excluding uncertain symptoms") or None (says nothing). The
            reader of questions picks a template by the certainty a question asks for.
        statement: the PTB-XL statement a record-level verify template asks about ("yes": it is present);
            its answer is coded as that statement, read per window, calibrated and checked for
            reliability as a finding. None for the others.
        record_attribute: ECG-QA's attribute value of a record-level verify question (the generated
            samples' ``attributes``); None for the others.
        any_statement: the answer follows ECG-QA's "any ... symptoms" meaning, whose "yes" counts sinus
            rhythm: answers carry a warning saying so (:data:`SEMANTICS`).
    """

    template_id: int
    question_type: QuestionType
    group: str  # what it asks about (see CatalogueEntry.group)
    text: str  # ECG-QA wording; ${attribute}, ${attribute1}, ${attribute2} placeholders
    train_paraphrases: tuple[str, ...]
    heldout_paraphrases: tuple[str, ...]
    uncertain: Literal["included", "excluded"] | None = None
    statement: str | None = None
    record_attribute: str | None = None
    any_statement: bool = False

    @property
    def n_attributes(self) -> int:
        """How many attribute values the wording takes: 1 (``${attribute}``), 2 (a choice) or 0."""
        return 1 if ATTRIBUTE in self.text else 2 if ATTRIBUTE1 in self.text else 0

    @property
    def record_level(self) -> bool:
        """Whether the question names no finding: it asks about the record as a whole."""
        return self.n_attributes == 0

    @property
    def one_finding(self) -> bool:
        """Whether it is the yes/no question about one finding: a named one (``${attribute}``) or the
        template's own :attr:`statement`. Such an answer is read, calibrated and checked as that
        finding's; any other template's reliability is the template's own."""
        return self.question_type is QuestionType.VERIFY and (
            self.n_attributes == 1 or self.statement is not None
        )

    @property
    def negative_option(self) -> str:
        """The option that says "no finding": ``none`` for a choice or query, ``no`` for a verify question,
        ``yes`` when its statement is the normal ECG. A record's windows are combined by the lowest
        probability of it."""
        if self.question_type is not QuestionType.VERIFY:
            return NONE_ANSWER
        return "yes" if self.statement == NORMAL_STATEMENT else "no"


_A, _A1, _A2 = ATTRIBUTE, ATTRIBUTE1, ATTRIBUTE2
_INC, _EXC = ", including uncertain symptoms", ", excluding uncertain symptoms"
_V, _C, _Q = QuestionType.VERIFY, QuestionType.CHOOSE, QuestionType.QUERY


_t = QuestionTemplate  # the table's rows: id, type, group, wording, paraphrases, then routing keywords


TEMPLATES: dict[int, QuestionTemplate] = {
    t.template_id: t
    for t in (
        _t(
            1,
            _V,
            "code",
            f"Does this ECG show symptoms of {_A}?",
            (
                f"Are there signs of {_A} in this ECG?",
                f"Does this ECG indicate {_A}?",
                f"Is there {_A}?",
                f"Does this ECG have {_A}?",
                f"Do you see {_A} in this ECG?",
                f"Is {_A} present?",
                f"Does the ECG show {_A}?",
                f"Does this recording show {_A}?",
                f"Any {_A} on this ECG?",
                f"Is {_A} found in this tracing?",
            ),
            (f"Is there evidence of {_A} in this ECG?", f"Can {_A} be seen on this ECG?"),
        ),
        _t(
            2,
            _V,
            "norm",
            "Is this a normal ECG?",
            (
                "Is this ECG normal?",
                "Is the ECG within normal limits?",
                "Is this a normal tracing?",
                "Is this ECG unremarkable?",
            ),
            ("Would you read this ECG as normal?", "Does this ECG look normal?"),
            statement=NORMAL_STATEMENT,
            record_attribute=NORMAL_STATEMENT,
        ),
        _t(
            3,
            _C,
            "superclass",
            f"Which diagnostic symptom does this ECG show, {_A1} or {_A2}?",
            (
                f"Which of {_A1} and {_A2} does this ECG show?",
                f"Does this ECG show {_A1} or {_A2}?",
                f"{_A1} or {_A2}: which one is in this ECG?",
            ),
            (
                f"Between {_A1} and {_A2}, which is present in this ECG?",
                f"Which is found in this ECG: {_A1} or {_A2}?",
            ),
        ),
        _t(
            4,
            _C,
            "dx_inc",
            f"Which diagnostic symptom does this ECG show, {_A1} or {_A2}{_INC}?",
            (f"Which of {_A1} and {_A2} does this ECG show{_INC}?",),
            (f"Counting uncertain findings too, which is present in this ECG: {_A1} or {_A2}?",),
            uncertain="included",
        ),
        _t(
            5,
            _C,
            "dx_exc",
            f"Which diagnostic symptom does this ECG show, {_A1} or {_A2}{_EXC}?",
            (f"Which of {_A1} and {_A2} does this ECG show{_EXC}?",),
            (f"Counting only certain findings, which is present in this ECG: {_A1} or {_A2}?",),
            uncertain="excluded",
        ),
        _t(
            6,
            _C,
            "form",
            f"Which form-related symptom does this ECG show, {_A1} or {_A2}?",
            (
                f"Which of the waveform findings {_A1} and {_A2} does this ECG show?",
                f"Does this ECG show {_A1} or {_A2}?",
            ),
            (f"Looking at the waveform shape, which is present in this ECG: {_A1} or {_A2}?",),
        ),
        _t(
            7,
            _C,
            "rhythm",
            f"Which rhythm-related symptom does this ECG show, {_A1} or {_A2}?",
            (
                f"Which of the rhythm findings {_A1} and {_A2} does this ECG show?",
                f"Is the rhythm {_A1} or {_A2}?",
            ),
            (f"Regarding the rhythm, which is present in this ECG: {_A1} or {_A2}?",),
        ),
        _t(
            8,
            _Q,
            "dx_inc",
            f"What diagnostic symptoms does this ECG show{_INC}?",
            (f"Which diagnostic findings does this ECG have{_INC}?",),
            ("List every diagnostic finding in this ECG, counting uncertain ones too.",),
            uncertain="included",
        ),
        _t(
            9,
            _Q,
            "dx_exc",
            f"What diagnostic symptoms does this ECG show{_EXC}?",
            (f"Which diagnostic findings does this ECG have{_EXC}?",),
            ("List the diagnostic findings in this ECG, counting only certain ones.",),
            uncertain="excluded",
        ),
        _t(
            10,
            _Q,
            "rhythm",
            "What rhythm-related symptoms does this ECG show?",
            ("Which rhythm findings does this ECG have?",),
            ("Describe the rhythm findings of this ECG.",),
        ),
        _t(
            11,
            _Q,
            "form",
            "What form-related symptoms does this ECG show?",
            ("Which waveform findings does this ECG have?",),
            ("List the form-related findings seen in this ECG.",),
        ),
        _t(
            12,
            _V,
            "abnormal",
            "Does this ECG show any kind of abnormal symptoms?",
            ("Is anything abnormal in this ECG?",),
            ("Does this ECG contain any abnormal finding?",),
            record_attribute="any kind of abnormal symptoms",
            any_statement=True,
        ),
        _t(
            13,
            _V,
            "dx_inc",
            f"Does this ECG show any diagnostic symptoms{_INC}?",
            (f"Are there diagnostic findings in this ECG{_INC}?",),
            ("Counting uncertain findings too, is there any diagnostic finding in this ECG?",),
            uncertain="included",
            record_attribute="any diagnostic symptoms",
        ),
        _t(
            14,
            _V,
            "dx_exc",
            f"Does this ECG show any diagnostic symptoms{_EXC}?",
            (f"Are there diagnostic findings in this ECG{_EXC}?",),
            ("Counting only certain findings, is there any diagnostic finding in this ECG?",),
            uncertain="excluded",
            record_attribute="any diagnostic symptoms",
        ),
        _t(
            15,
            _V,
            "form",
            "Does this ECG show any form-related symptoms?",
            ("Are there waveform abnormalities in this ECG?",),
            ("Is the waveform shape of this ECG abnormal in any way?",),
            record_attribute="any form symptoms",
        ),
        _t(
            16,
            _V,
            "rhythm",
            "Does this ECG show any rhythm-related symptoms?",
            ("Are there rhythm findings in this ECG?",),
            ("Is any rhythm statement made for this ECG?",),
            record_attribute="any rhythm symptoms",
            any_statement=True,
        ),
    )
}


def fill_attributes(text: str, attributes: Sequence[str]) -> str:
    """A template sentence (or paraphrase) with its placeholders filled: one attribute goes into
    ``${attribute}``, two into ``${attribute1}`` and ``${attribute2}``.

    Raises:
        ValueError: a placeholder is left unfilled.
    """
    if len(attributes) == 1:
        text = text.replace(ATTRIBUTE, attributes[0])
    elif len(attributes) == 2:
        text = text.replace(ATTRIBUTE1, attributes[0]).replace(ATTRIBUTE2, attributes[1])
    if "${" in text:
        raise ValueError(f"unfilled placeholder in {text!r} (attributes {list(attributes)})")
    return text


# what each template's answer means: ECG-QA's own semantics (diagecg.datasets.ecgqa), said plainly
SEMANTICS: dict[int, str] = {
    1: "yes: the finding's PTB-XL statement applies; 'not sure': it applies with a low likelihood "
    "(diagnostic statements only); no: it does not. 'Is there no X?', 'Can you exclude X?' are answered "
    "as the negation",
    2: "yes: PTB-XL's 'normal ECG' statement applies. 'Is the ECG abnormal?', 'Is anything abnormal?' and "
    "'Is anything wrong?' are answered as its negation (yes = not a normal ECG)",
    12: "ECG-QA's 'abnormal symptoms' are any statement other than 'normal ECG', sinus rhythm included, so "
    "the answer is yes for almost every ECG; asked only in ECG-QA's own words. To ask whether an ECG is "
    "abnormal, ask 'Is the ECG abnormal?' (the negation of 'Is this a normal ECG?')",
    13: "yes: any diagnostic statement (infarction, ST/T change, conduction disturbance or hypertrophy "
    "classes), uncertain ones included; 'normal ECG' is not one",
    14: "yes: any diagnostic statement made with certainty; 'normal ECG' is not one",
    15: "yes: any form statement (ST, T wave, QRS, voltage, premature complexes...)",
    16: "ECG-QA's 'rhythm-related symptoms' are any rhythm statement, sinus rhythm included: yes for almost "
    "every ECG; it does not mean an arrhythmia. 'Is the rhythm regular / irregular / normal?' names no "
    "finding the model knows and is refused: ask about a rhythm by name",
}
NEGATED_TEXT: dict[int, str] = {2: "Is this ECG abnormal (not a normal ECG)?"}


def finding_template() -> QuestionTemplate:
    """The yes/no template about one named finding ("Does this ECG show symptoms of X?")."""
    return next(t for t in TEMPLATES.values() if t.one_finding and t.n_attributes == 1)


# "Is this a normal ECG?": its "yes" is the absence of findings
NORMAL_ECG_TEMPLATE = next(t.template_id for t in TEMPLATES.values() if t.statement == NORMAL_STATEMENT)

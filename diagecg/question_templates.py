"""The single-ECG ECG-QA templates a bundle's model is trained on, and what each answer means
(torch-free).

Each :class:`QuestionTemplate` has its ECG-QA wording, the attribute group it asks about, training
paraphrases and held-out ones (kept for evaluation); ``diagecg.datasets.ecgqa`` says where the wordings
come from and generates the questions, ``diagecg.questions`` reads free text against them.
:data:`SEMANTICS` says in words what each record-level answer means under ECG-QA's labelling rules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

__all__ = ["ATTRIBUTE", "ATTRIBUTE1", "ATTRIBUTE2", "NEGATED_TEXT", "NONE_ANSWER", "NORMAL_ECG_TEMPLATE",
           "SEMANTICS", "TEMPLATES", "QuestionTemplate", "fill_attributes"]

ATTRIBUTE = "${attribute}"
ATTRIBUTE1, ATTRIBUTE2 = "${attribute1}", "${attribute2}"
NONE_ANSWER = "none"  # the answer of a choose or query question when no candidate is present
NORMAL_ECG_TEMPLATE = 2  # "Is this a normal ECG?": its "yes" is the absence of findings

@dataclasses.dataclass(frozen=True)
class QuestionTemplate:
    """One single-ECG ECG-QA template the instruction data is generated from: its wording, the attribute
    group it asks about, its training paraphrases and the held-out ones (kept for evaluation)."""

    template_id: int
    question_type: str
    group: str  # what it asks about (see CatalogueEntry.group)
    text: str  # ECG-QA wording; ${attribute}, ${attribute1}, ${attribute2} placeholders
    train_paraphrases: tuple[str, ...]
    heldout_paraphrases: tuple[str, ...]


_A, _A1, _A2 = ATTRIBUTE, ATTRIBUTE1, ATTRIBUTE2
_INC, _EXC = ", including uncertain symptoms", ", excluding uncertain symptoms"


def _t(
    tid: int, qtype: str, group: str, text: str, train: tuple[str, ...], held: tuple[str, ...]
) -> QuestionTemplate:
    return QuestionTemplate(tid, f"single-{qtype}", group, text, train, held)


TEMPLATES: dict[int, QuestionTemplate] = {t.template_id: t for t in (
    _t(1, "verify", "code", f"Does this ECG show symptoms of {_A}?",
       (f"Are there signs of {_A} in this ECG?", f"Does this ECG indicate {_A}?", f"Is there {_A}?",
        f"Does this ECG have {_A}?", f"Do you see {_A} in this ECG?", f"Is {_A} present?",
        f"Does the ECG show {_A}?", f"Does this recording show {_A}?", f"Any {_A} on this ECG?",
        f"Is {_A} found in this tracing?"),
       (f"Is there evidence of {_A} in this ECG?", f"Can {_A} be seen on this ECG?")),
    _t(2, "verify", "norm", "Is this a normal ECG?",
       ("Is this ECG normal?", "Is the ECG within normal limits?", "Is this a normal tracing?",
        "Is this ECG unremarkable?"),
       ("Would you read this ECG as normal?", "Does this ECG look normal?")),
    _t(3, "choose", "superclass", f"Which diagnostic symptom does this ECG show, {_A1} or {_A2}?",
       (f"Which of {_A1} and {_A2} does this ECG show?", f"Does this ECG show {_A1} or {_A2}?",
        f"{_A1} or {_A2}: which one is in this ECG?"),
       (f"Between {_A1} and {_A2}, which is present in this ECG?",
        f"Which is found in this ECG: {_A1} or {_A2}?")),
    _t(4, "choose", "dx_inc", f"Which diagnostic symptom does this ECG show, {_A1} or {_A2}{_INC}?",
       (f"Which of {_A1} and {_A2} does this ECG show{_INC}?",),
       (f"Counting uncertain findings too, which is present in this ECG: {_A1} or {_A2}?",)),
    _t(5, "choose", "dx_exc", f"Which diagnostic symptom does this ECG show, {_A1} or {_A2}{_EXC}?",
       (f"Which of {_A1} and {_A2} does this ECG show{_EXC}?",),
       (f"Counting only certain findings, which is present in this ECG: {_A1} or {_A2}?",)),
    _t(6, "choose", "form", f"Which form-related symptom does this ECG show, {_A1} or {_A2}?",
       (f"Which of the waveform findings {_A1} and {_A2} does this ECG show?",
        f"Does this ECG show {_A1} or {_A2}?"),
       (f"Looking at the waveform shape, which is present in this ECG: {_A1} or {_A2}?",)),
    _t(7, "choose", "rhythm", f"Which rhythm-related symptom does this ECG show, {_A1} or {_A2}?",
       (f"Which of the rhythm findings {_A1} and {_A2} does this ECG show?",
        f"Is the rhythm {_A1} or {_A2}?"),
       (f"Regarding the rhythm, which is present in this ECG: {_A1} or {_A2}?",)),
    _t(8, "query", "dx_inc", f"What diagnostic symptoms does this ECG show{_INC}?",
       (f"Which diagnostic findings does this ECG have{_INC}?",),
       ("List every diagnostic finding in this ECG, counting uncertain ones too.",)),
    _t(9, "query", "dx_exc", f"What diagnostic symptoms does this ECG show{_EXC}?",
       (f"Which diagnostic findings does this ECG have{_EXC}?",),
       ("List the diagnostic findings in this ECG, counting only certain ones.",)),
    _t(10, "query", "rhythm", "What rhythm-related symptoms does this ECG show?",
       ("Which rhythm findings does this ECG have?",), ("Describe the rhythm findings of this ECG.",)),
    _t(11, "query", "form", "What form-related symptoms does this ECG show?",
       ("Which waveform findings does this ECG have?",),
       ("List the form-related findings seen in this ECG.",)),
    _t(12, "verify", "abnormal", "Does this ECG show any kind of abnormal symptoms?",
       ("Is anything abnormal in this ECG?",), ("Does this ECG contain any abnormal finding?",)),
    _t(13, "verify", "dx_inc", f"Does this ECG show any diagnostic symptoms{_INC}?",
       (f"Are there diagnostic findings in this ECG{_INC}?",),
       ("Counting uncertain findings too, is there any diagnostic finding in this ECG?",)),
    _t(14, "verify", "dx_exc", f"Does this ECG show any diagnostic symptoms{_EXC}?",
       (f"Are there diagnostic findings in this ECG{_EXC}?",),
       ("Counting only certain findings, is there any diagnostic finding in this ECG?",)),
    _t(15, "verify", "form", "Does this ECG show any form-related symptoms?",
       ("Are there waveform abnormalities in this ECG?",),
       ("Is the waveform shape of this ECG abnormal in any way?",)),
    _t(16, "verify", "rhythm", "Does this ECG show any rhythm-related symptoms?",
       ("Are there rhythm findings in this ECG?",), ("Is any rhythm statement made for this ECG?",)),
)}



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

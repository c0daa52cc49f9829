"""Warnings of an answer, each with a stable machine-readable code beside its text (torch-free).

Every warning an answer carries is a :class:`Note`: ``{"code": "FINDING_FEW_POSITIVES", "message":
"..."}`` in JSON. The codes are part of the answer format (schema_version 4 on): a host may branch on
them; the messages may be reworded. :data:`WARNING_CODES` lists them all with what each means.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["WARNING_CODES", "Note", "W"]


class W:
    """The warning codes (values are the strings written to JSON)."""

    ENGINE = "ENGINE"
    RECORD = "RECORD"
    DEGRADED_LEADS = "DEGRADED_LEADS"
    WINDOWS_COMBINED = "WINDOWS_COMBINED"
    RECORD_PART_NOT_ANALYSED = "RECORD_PART_NOT_ANALYSED"
    GENERATION = "GENERATION"
    ANSWER_FILTERED = "ANSWER_FILTERED"
    QUESTION_UNSUPPORTED = "QUESTION_UNSUPPORTED"
    QUESTION_BROADER = "QUESTION_BROADER"
    QUESTION_NARROWER = "QUESTION_NARROWER"
    ECGQA_ANY_STATEMENT = "ECGQA_ANY_STATEMENT"
    FINDING_NOT_VALIDATED = "FINDING_NOT_VALIDATED"
    FINDING_FEW_POSITIVES = "FINDING_FEW_POSITIVES"
    FINDING_LOW_AUC = "FINDING_LOW_AUC"
    FINDING_LOW_PPV = "FINDING_LOW_PPV"
    TEMPLATE_NOT_BETTER_THAN_MAJORITY = "TEMPLATE_NOT_BETTER_THAN_MAJORITY"
    ANSWER_FROM_MEMBER = "ANSWER_FROM_MEMBER"
    ANSWER_CONTRADICTED = "ANSWER_CONTRADICTED"
    STATEMENT_NOT_CONFIRMED = "STATEMENT_NOT_CONFIRMED"
    STATEMENT_CONTRADICTED = "STATEMENT_CONTRADICTED"
    MEASUREMENTS_UNAVAILABLE = "MEASUREMENTS_UNAVAILABLE"
    # a record that fails a plausibility check (diagecg.plausibility.CHECKS; reliability "implausible_record")
    LIMB_LEADS_REVERSED = "LIMB_LEADS_REVERSED"
    RATE_CONTRADICTS_WAVEFORM = "RATE_CONTRADICTS_WAVEFORM"
    AMPLITUDE_IMPLAUSIBLE = "AMPLITUDE_IMPLAUSIBLE"
    TIME_REVERSED = "TIME_REVERSED"
    SIGNAL_REPEATS = "SIGNAL_REPEATS"
    LEAD_NOISE = "LEAD_NOISE"


WARNING_CODES: dict[str, str] = {
    W.ENGINE: "an inference engine did not run as requested (e.g. CUDA asked for, CPU used)",
    W.RECORD: "reading or checking the record (derived leads, units, quality, length)",
    W.DEGRADED_LEADS: "the answer needs leads that are flat in this record: do not trust it",
    W.WINDOWS_COMBINED: "a long record was analysed in several windows and their results combined",
    W.RECORD_PART_NOT_ANALYSED: "the end of a record shorter than 1.5 windows was not analysed (a second "
    "window would have repeated most of the first)",
    W.GENERATION: "text generation was cut short (token budget, context)",
    W.ANSWER_FILTERED: "decoded answer members that are not options of the question were dropped",
    W.QUESTION_UNSUPPORTED: "the question is not one the model was trained to answer: no answer given",
    W.QUESTION_BROADER: "answered for a broader finding than asked: a 'yes' does not confirm what was asked",
    W.QUESTION_NARROWER: "answered for a narrower finding than asked: a 'no' does not exclude what was asked",
    W.ECGQA_ANY_STATEMENT: "ECG-QA's 'abnormal' or 'rhythm-related symptoms' count sinus rhythm too",
    W.FINDING_NOT_VALIDATED: "the bundle's held-out evaluation has no numbers for this finding",
    W.FINDING_FEW_POSITIVES: "validated on fewer positive records than the floor: its numbers are unreliable",
    W.FINDING_LOW_AUC: "the finding's held-out AUC is below the floor",
    W.FINDING_LOW_PPV: "held out, a 'yes' for this finding was wrong more often than right",
    W.TEMPLATE_NOT_BETTER_THAN_MAJORITY: "held out, the model was no better at this question than always "
    "giving its most common answer",
    W.ANSWER_FROM_MEMBER: "a superclass was answered yes because the model reads one of its member findings "
    "as present",
    W.ANSWER_CONTRADICTED: "the model's own yes was overruled: it reads a finding no ECG has together with "
    "this one as more probable",
    W.STATEMENT_NOT_CONFIRMED: "a generated statement was dropped: the model's own yes/no reading of it "
    "said no",
    W.STATEMENT_CONTRADICTED: "a statement was dropped because it contradicts a more probable one",
    W.MEASUREMENTS_UNAVAILABLE: "no measurements in a report (neurokit2 missing)",
    W.LIMB_LEADS_REVERSED: "P, QRS and T negative in lead I and positive in aVR: arm electrodes swapped, "
    "every lead inverted, or dextrocardia",
    W.RATE_CONTRADICTS_WAVEFORM: "the beat rate and the slope spectrum together say the stated sampling rate "
    "is wrong (the waveform looks played slower or faster than recorded)",
    W.AMPLITUDE_IMPLAUSIBLE: "the largest QRS of the 12 leads is outside what hearts produce (a gain or "
    "units error?)",
    W.TIME_REVERSED: "the large wave comes before each QRS and the small one after it: the record may run "
    "backwards",
    W.SIGNAL_REPEATS: "the signal, or its QRS complexes, repeat more exactly than a heart does: a simulator, "
    "a synthetic or a copied signal",
    W.LEAD_NOISE: "a lead looks like noise, has dropouts, or holds one value too long",
}


@dataclasses.dataclass(frozen=True)
class Note:
    """One warning: a code of :data:`WARNING_CODES` and one line of text."""

    code: str
    message: str

    def __post_init__(self) -> None:
        if self.code not in WARNING_CODES:
            raise ValueError(f"Note.code={self.code!r} is not a warning code; known: {sorted(WARNING_CODES)}")

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}

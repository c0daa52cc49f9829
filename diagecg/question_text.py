"""A typed question's words made plain, as every reader of questions sees them (torch-free).

:func:`normalize_question` is what ``diagecg.finding_names`` finds names in and what the matcher
(``diagecg.questions``) and the suggestions (``diagecg.refusals``) read; :data:`KEYWORDS` and
:data:`FILLER` are the record-level words and the words that carry no meaning, shared by both.
"""

from __future__ import annotations

import re

from diagecg.polarity import expand_contractions

__all__ = ["FILLER", "KEYWORDS", "normalize_question"]

_STRIP = re.compile(r"[^a-z0-9/\-(),.' ]+")
# record-level words a spelling slip may be read as (never the other way round)
KEYWORDS = (
    "normal",
    "abnormal",
    "abnormality",
    "abnormalities",
    "rhythm",
    "regular",
    "irregular",
    "waveform",
    "diagnostic",
    "symptoms",
    "findings",
    "morphology",
    "evidence",
)
# words that carry no meaning for finding the nearest name
FILLER = frozenset(
    "a an the is are was were be been there this that these those it its of in on at to for with and or "
    "does do did show shows showing see seen can could would will you your me my patient ecg ekg tracing "
    "recording any sign signs symptom symptoms evidence present have has had please tell whether if "
    "what which how why when where who here found find look looks like indicate indicates".split()
)


def normalize_question(text: str) -> str:
    """Lower case, plain quotes and dashes, no punctuation beyond ``/ - ( ) ,``, single spaces,
    contractions expanded (``isn't`` -> ``is not``) and British spellings made American
    (``ischaemia`` -> ``ischemia``)."""
    t = text.lower().replace("\u2019", "'").replace("\u2013", "-").replace("\u2014", "-")
    t = t.replace("°", " degree ")
    t = _STRIP.sub(" ", t)
    t = expand_contractions(t)
    t = re.sub(r"(?<![a-z0-9])[.'](?![a-z0-9])", " ", t)  # sentence periods and stray quotes
    t = re.sub(r"[,.](?=\s|$)", " ", t)
    t = re.sub(r"ischaem", "ischem", t).replace("oesophag", "esophag")
    return " ".join(t.split())

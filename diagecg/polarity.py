"""Which way a question points: negations, exclusions and opposites (torch-free; ``diagecg.questions``).

A question is answered as it was asked. "Is there no AF?", "Is AF absent?", "Can you exclude AF?",
"Is AF ruled out?" and "no AF?" ask the **negation** of "Does this ECG show symptoms of atrial
fibrillation?": the model is asked the catalogue question and its answer and option probabilities are
inverted (yes <-> no; "not sure" stays). Cues are counted outside the words that name a finding
(``negative T waves`` and ``non-specific ST changes`` are names, not negations), so double negations
cancel: "Is it not true that there is no AF?" asks about AF itself.

Negation cues (:data:`NEGATION_CUES`): no, not (and n't), never, without, absent / absence, lack(s),
lacking, free of / from, negative for, rule(d) out, exclude(d) / excluding / exclusion, nothing, false,
untrue. Phrases that only frame a yes/no question are not cues: "or not", "yes or no", "yes/no",
"present or absent", "not sure", and ECG-QA's "excluding uncertain symptoms".

Opposites (:func:`opposite_flips`): "abnormal", "pathological", "anything wrong" are the negation of
"Is this a normal ECG?". Opposites that name no finding the model knows (regular / irregular rhythm,
a normal or abnormal rhythm) are refused by the matcher, not inverted.
"""

from __future__ import annotations

import re

__all__ = [
    "NEGATION_CUES",
    "count_negations",
    "expand_contractions",
    "invert_answer",
    "invert_probabilities",
    "opposite_flips",
    "strip_framing",
]

NEGATION_CUES = (
    "no",
    "not",
    "never",
    "without",
    "absent",
    "absence",
    "lack",
    "lacks",
    "lacking",
    "free of",
    "free from",
    "negative for",
    "rule out",
    "ruled out",
    "rules out",
    "ruling out",
    "exclude",
    "excluded",
    "excludes",
    "excluding",
    "exclusion",
    "nothing",
    "false",
    "untrue",
)
_CUES = re.compile(
    r"(?<![a-z0-9\-])("
    + "|".join(re.escape(c) for c in sorted(NEGATION_CUES, key=len, reverse=True))
    + r")(?![a-z0-9\-])"
)
# phrases that frame a yes/no question or are ECG-QA's own wording, not negations
_FRAMING = re.compile(
    r"\b(or not|yes or no|yes/no|yes, no|no or yes|or no|present or absent|"
    r"absent or present|not sure|whether or not|"
    r"(excluding|without|not counting|not including) uncertain"
    r"( symptoms?| findings?| ones| statements?)?)\b"
)
_CONTRACTIONS = (
    (r"\bcan'?t\b", "can not"),
    (r"\bcannot\b", "can not"),
    (r"\bwon'?t\b", "will not"),
    (r"\b(is|are|was|were|does|do|did|has|have|had|should|could|would)n'?t\b", r"\1 not"),
)
_ABNORMAL = re.compile(
    r"\b(abnormal(ity|ities|ly)?|patholog(y|ic|ical)|anything wrong|something wrong|"
    r"wrong)\b"
)
_INVERT = {"yes": "no", "no": "yes"}


def expand_contractions(text: str) -> str:
    """``isn't`` -> ``is not``, ``can't`` / ``cannot`` -> ``can not`` (also without the apostrophe)."""
    for pattern, repl in _CONTRACTIONS:
        text = re.sub(pattern, repl, text)
    return text


def strip_framing(text: str) -> str:
    """``text`` without the phrases that only frame a yes/no question ("or not", "present or absent")."""
    return " ".join(_FRAMING.sub(" ", text).split())


def count_negations(text: str) -> int:
    """How many negation cues ``text`` holds (normalised, contractions expanded, finding names blanked
    out), framing phrases left out."""
    return len(_CUES.findall(strip_framing(text)))


def opposite_flips(text: str) -> int:
    """How many words of ``text`` name the opposite of a normal ECG ("abnormal", "pathological",
    "anything wrong"); each flips the question "Is this a normal ECG?"."""
    return len(_ABNORMAL.findall(text))


def invert_answer(answer: str) -> str:
    """``yes`` <-> ``no``; any other answer (``not sure``) is its own inverse."""
    return _INVERT.get(answer, answer)


def invert_probabilities(probs: dict[str, float], options: tuple[str, ...]) -> dict[str, float]:
    """Option probabilities of the negated question, in ``options`` order: p(yes) and p(no) swapped."""
    swapped = {invert_answer(o): p for o, p in probs.items()}
    return {o: swapped[o] for o in options if o in swapped}

"""Statements that cannot both hold of one ECG, and the one rule that keeps an answer free of them
(torch-free).

:data:`CONTRADICTIONS` lists pairs of PTB-XL statements (SCP-ECG codes and superclasses) that one ECG
never carries together:

* "normal ECG" (NORM) beside an infarction (any MI statement or the MI class), hypertrophy (the class,
  LVH, RVH, septal hypertrophy, atrial enlargement), ischemia, subendocardial injury, digitalis effect,
  long QT, ventricular aneurysm, electrolyte disturbance, a complete bundle branch block, a second or
  third degree AV block, WPW, a paced rhythm, atrial fibrillation or flutter;
* a sinus rhythm (sinus rhythm, sinus bradycardia, sinus tachycardia, sinus arrhythmia) beside atrial
  fibrillation or flutter; sinus bradycardia beside sinus tachycardia;
* a complete and an incomplete block of the same bundle; left and right complete bundle branch block;
* low QRS voltages beside high QRS voltage, LVH voltage criteria or LVH.

Each pair is co-labelled in at most one of PTB-XL's 4,253 labelled records here (a test checks it), with
one exception kept on purpose: PTB-XL labels 37 records "normal ECG" beside atrial fibrillation (its
NORM there describes the waveform apart from the rhythm); clinically a normal ECG is in sinus rhythm,
and so it is here.

:func:`resolve` is the rule: statements are taken from the most probable down (the probability that
the finding is present; without probabilities, the one seen in more windows, then a finding before
"normal ECG", then the order given), and a statement that contradicts one already taken is dropped.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from diagecg.statements import find_statement

__all__ = ["CONTRADICTIONS", "SUPERCLASS_MEMBERS", "contradicting_pairs", "resolve", "statement_code"]

SUPERCLASS_MEMBERS: dict[str, frozenset[str]] = {
    "MI": frozenset(
        {
            "IMI",
            "ASMI",
            "ILMI",
            "AMI",
            "ALMI",
            "LMI",
            "IPLMI",
            "IPMI",
            "PMI",
            "INJAS",
            "INJAL",
            "INJIN",
            "INJLA",
            "INJIL",
        }
    ),
    "STTC": frozenset(
        {
            "NDT",
            "NST_",
            "DIG",
            "LNGQT",
            "ISC_",
            "ISCAL",
            "ISCIN",
            "ISCIL",
            "ISCAS",
            "ISCLA",
            "ANEUR",
            "EL",
            "ISCAN",
        }
    ),
    "CD": frozenset(
        {"LAFB", "IRBBB", "1AVB", "IVCD", "CRBBB", "CLBBB", "LPFB", "WPW", "ILBBB", "3AVB", "2AVB"}
    ),
    "HYP": frozenset({"LVH", "LAO/LAE", "RVH", "RAO/RAE", "SEHYP"}),
}
_NOT_NORMAL = frozenset(
    {
        "MI",
        *SUPERCLASS_MEMBERS["MI"],
        "HYP",
        *SUPERCLASS_MEMBERS["HYP"],
        *(SUPERCLASS_MEMBERS["STTC"] - {"NDT", "NST_"}),
        "CLBBB",
        "CRBBB",
        "2AVB",
        "3AVB",
        "WPW",
        "PACE",
        "AFIB",
        "AFLT",
    }
)
_SINUS = ("SR", "SBRAD", "STACH", "SARRH")


def _pairs() -> frozenset[frozenset[str]]:
    pairs = {frozenset({"NORM", c}) for c in _NOT_NORMAL}
    pairs |= {frozenset({s, a}) for s in _SINUS for a in ("AFIB", "AFLT")}
    pairs |= {
        frozenset(p)
        for p in (
            ("SBRAD", "STACH"),
            ("CLBBB", "ILBBB"),
            ("CRBBB", "IRBBB"),
            ("CLBBB", "CRBBB"),
            ("LVOLT", "HVOLT"),
            ("LVOLT", "VCLVH"),
            ("LVOLT", "LVH"),
        )
    }
    return frozenset(pairs)


CONTRADICTIONS: frozenset[frozenset[str]] = _pairs()


def statement_code(text: str) -> str | None:
    """The PTB-XL code a statement's text names (SCP-ECG code or superclass), or None."""
    st = find_statement(text)
    return None if st is None else st.code


def contradicting_pairs(texts: Iterable[str]) -> list[tuple[str, str]]:
    """The pairs of ``texts`` (statements said present) that contradict each other."""
    coded = [(t, statement_code(t)) for t in texts]
    return [
        (a, b)
        for (a, ca), (b, cb) in itertools.combinations(coded, 2)
        if ca is not None and cb is not None and frozenset({ca, cb}) in CONTRADICTIONS
    ]


def resolve(statements: Sequence[tuple[str, float | None, int]]) -> tuple[list[str], list[tuple[str, str]]]:
    """Keep the statements that do not contradict a more probable one (module docstring).

    Args:
        statements: ``(text, probability that it is present or None, windows it was said in)``, in the
            order they were said.

    Returns:
        The kept texts (in the order given) and ``(dropped, the statement it contradicts)`` pairs.
    """

    def rank(i: int) -> tuple[float, int, bool, int]:
        text, p, windows = statements[i]
        return (-(p if p is not None else -1.0), -windows, statement_code(text) == "NORM", i)

    kept: list[int] = []
    dropped: list[tuple[str, str]] = []
    for i in sorted(range(len(statements)), key=rank):
        text = statements[i][0]
        clash = next((statements[k][0] for k in kept if contradicting_pairs([statements[k][0], text])), None)
        if clash is None:
            kept.append(i)
        else:
            dropped.append((text, clash))
    return [statements[i][0] for i in sorted(kept)], dropped

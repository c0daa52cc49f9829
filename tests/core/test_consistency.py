"""Contradictory statements and the rule that resolves them (diagecg.consistency)."""

from __future__ import annotations

import ast
import csv
import itertools
from collections import Counter
from pathlib import Path

from diagecg.consistency import CONTRADICTIONS, SUPERCLASS_MEMBERS, contradicting_pairs, resolve
from diagecg.statements import BY_CODE


def test_contradictions_are_found_in_any_spelling() -> None:
    assert contradicting_pairs(["normal ecg", "myocardial infarction in inferior leads"]) == [
        ("normal ecg", "myocardial infarction in inferior leads")
    ]
    assert contradicting_pairs(["Sinus bradycardia", "sinus tachycardia", "sinus rhythm"]) == [
        ("Sinus bradycardia", "sinus tachycardia")
    ]
    assert contradicting_pairs(["atrial fibrillation", "sinus rhythm"]) != []
    assert contradicting_pairs(["sinus rhythm", "complete left bundle branch block", "left type"]) == []
    assert all(code in BY_CODE for pair in CONTRADICTIONS for code in pair)


def test_the_more_probable_statement_stays() -> None:
    kept, dropped = resolve(
        [("sinus rhythm", 0.9, 1), ("normal ecg", 0.4, 1), ("inferior myocardial infarction", 0.7, 1)]
    )
    assert kept == ["sinus rhythm", "inferior myocardial infarction"]
    assert dropped == [("normal ecg", "inferior myocardial infarction")]
    kept, _ = resolve([("normal ecg", 0.95, 2), ("inferior myocardial infarction", 0.6, 1)])
    assert kept == ["normal ecg"]
    # without probabilities: the statement said in more windows, then a finding before "normal ECG"
    assert resolve([("normal ecg", None, 1), ("inferior myocardial infarction", None, 1)])[0] == [
        "inferior myocardial infarction"
    ]
    assert resolve([("atrial fibrillation", None, 1), ("sinus rhythm", None, 3)])[0] == ["sinus rhythm"]
    assert resolve([]) == ([], [])


def test_declared_contradictions_are_never_co_labelled_in_ptbxl(ptbxl_root: Path) -> None:
    """Each pair occurs together in at most one labelled PTB-XL record, except NORM + AFIB (documented)."""
    together: Counter[frozenset[str]] = Counter()
    n = 0
    with (ptbxl_root / "ptbxl_labels.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            codes = set(ast.literal_eval(row["scp_codes"]))
            codes |= {s for s, members in SUPERCLASS_MEMBERS.items() if codes & members}
            together.update(frozenset(p) for p in itertools.combinations(sorted(codes), 2))
            n += 1
    assert n > 4000
    with (ptbxl_root / "scp_statements.csv").open(newline="") as f:
        classes = {r[""]: r["diagnostic_class"] for r in csv.DictReader(f)}
    assert {s: {c for c, k in classes.items() if k == s} for s in SUPERCLASS_MEMBERS} == SUPERCLASS_MEMBERS
    over = {tuple(sorted(p)): together[p] for p in CONTRADICTIONS if together[p] > 1}
    assert over == {("AFIB", "NORM"): 37}

"""PTB-XL findings as one namespace: superclasses and SCP statements, their labels, the frequent ones."""

from __future__ import annotations

from types import SimpleNamespace

from diagecg.datasets.ptbxl import (
    SUPERCLASSES,
    PtbxlDataset,
    PtbxlEntry,
    finding_labels,
    frequent_findings,
    has_finding,
)
from diagecg.types import PatientInfo


def entry(ecg_id: int, scp_codes: dict[str, float], superclasses: list[str]) -> PtbxlEntry:
    return PtbxlEntry(
        ecg_id=ecg_id,
        patient_id=ecg_id,
        strat_fold=1,
        scp_codes=scp_codes,
        report_de="",
        patient=PatientInfo(),
        superclasses=superclasses,
    )


def fake_dataset(*entries: PtbxlEntry) -> PtbxlDataset:
    return SimpleNamespace(entries={e.ecg_id: e for e in entries})  # type: ignore[return-value]


def test_superclasses_come_from_the_superclass_column_statements_from_the_codes() -> None:
    e = entry(1, {"IMI": 35.0, "SR": 0.0}, ["MI"])
    assert has_finding(e, "MI")  # diagnostic_superclass, though no code is named "MI"
    assert has_finding(e, "IMI") and has_finding(e, "SR")  # any likelihood counts, 0 included
    assert not has_finding(e, "CD") and not has_finding(e, "AFIB") and not has_finding(e, "NORM")
    # a superclass is never read from the statement codes: an (odd) code "CD" does not make it present
    assert not has_finding(entry(2, {"CD": 100.0}, []), "CD")
    assert has_finding(entry(3, {"NORM": 0.0}, ["NORM"]), "NORM")


def test_norm_is_the_same_finding_as_statement_and_superclass(ptbxl: PtbxlDataset) -> None:
    for e in ptbxl.entries.values():
        assert ("NORM" in e.superclasses) == ("NORM" in e.scp_codes) == has_finding(e, "NORM")


def test_finding_labels_are_rows_of_has_finding(ptbxl: PtbxlDataset) -> None:
    ids = ptbxl.ids((1,))[:30]
    findings = ("NORM", "MI", "AFIB", "SR")
    labels = finding_labels(ptbxl, ids, findings)
    assert len(labels) == 30 and all(len(row) == 4 for row in labels)
    for i, row in zip(ids, labels, strict=True):
        assert row == [float(has_finding(ptbxl.entries[i], c)) for c in findings]
    assert {v for row in labels for v in row} == {0.0, 1.0}


def test_frequent_findings_order_and_threshold() -> None:
    ds = fake_dataset(
        entry(1, {"SR": 0.0, "NORM": 100.0, "LVH": 50.0}, ["NORM", "HYP"]),
        entry(2, {"SR": 0.0, "AFIB": 100.0, "LVH": 100.0}, ["HYP"]),
        entry(3, {"SR": 0.0, "AFIB": 100.0, "IMI": 15.0}, ["MI"]),
        entry(4, {"SR": 0.0, "NORM": 80.0, "PVC": 0.0}, ["NORM"]),
    )
    ids = [1, 2, 3, 4]
    # SR 4 times; AFIB and LVH twice (tie: by code); IMI, PVC once; NORM is a superclass, never repeated
    assert frequent_findings(ds, ids, 2) == (*SUPERCLASSES, "SR", "AFIB", "LVH")
    assert frequent_findings(ds, ids, 1) == (*SUPERCLASSES, "SR", "AFIB", "LVH", "IMI", "PVC")
    assert frequent_findings(ds, ids, 3) == (*SUPERCLASSES, "SR")
    assert frequent_findings(ds, ids, 5) == SUPERCLASSES  # the superclasses are always asked for
    assert frequent_findings(ds, [1], 1) == (*SUPERCLASSES, "LVH", "SR")  # only the ids given count


def test_frequent_findings_on_real_labels_match_a_count(ptbxl: PtbxlDataset) -> None:
    ids = ptbxl.ids((1, 2))
    found = frequent_findings(ptbxl, ids, 8)
    statements = found[len(SUPERCLASSES) :]
    counts = {c: sum(c in ptbxl.entries[i].scp_codes for i in ids) for c in statements}
    assert found[: len(SUPERCLASSES)] == SUPERCLASSES and "NORM" not in statements
    assert all(k >= 8 for k in counts.values()) and "SR" in statements
    assert [counts[c] for c in statements] == sorted(counts.values(), reverse=True)
    every = {c for i in ids for c in ptbxl.entries[i].scp_codes}
    missing = {c for c in every - set(found) if sum(c in ptbxl.entries[i].scp_codes for i in ids) >= 8}
    assert not missing

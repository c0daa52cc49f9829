"""Per-finding reliability read from a bundle's held-out evaluation (diagecg.reliability)."""

from __future__ import annotations

import json

import pytest

from diagecg.bundle import default_bundle
from diagecg.constants import MANIFEST_NAME
from diagecg.notes import WARNING_CODES, Note, W
from diagecg.reliability import MIN_AUC, MIN_POSITIVES, ReliabilityTable, hanley_mcneil, wilson


def _row(name: str, n_pos: int, auc: float, sens: float, spec: float, n: int = 177, **extra: object) -> dict:
    return {
        "name": name,
        "n": n,
        "n_pos": n_pos,
        "auc": auc,
        "sensitivity": sens,
        "specificity": spec,
        **extra,
    }


def _evaluation(per_finding: dict) -> dict:
    return {
        "folds": [10],
        "n_records": 177,
        "findings": {"template": {"model": {"per_finding": per_finding}}},
        "qa": {
            "template": {
                "by_template": {
                    "12": {"model": 0.95, "majority_template": 0.95, "n": 21},
                    "3": {"model": 0.8, "majority_template": 0.6, "n": 40},
                }
            }
        },
    }


def test_intervals_match_published_values() -> None:
    # Wilson 95% of 7/10 is 0.397-0.892 (Newcombe 1998, Table I gives 0.3968-0.8922)
    assert wilson(7, 10) == [0.3968, 0.8922]
    assert wilson(0, 0) is None and wilson(0, 20)[0] == 0.0
    # Hanley & McNeil: AUC 0.9 on 50 + 50 has SE ~0.030 -> about 0.84-0.96
    lo, hi = hanley_mcneil(0.9, 50, 50)
    assert 0.83 < lo < 0.85 and 0.95 < hi < 0.97
    assert hanley_mcneil(0.9, 0, 50) is None


def test_status_follows_the_floor_and_ppv_comes_from_the_counts() -> None:
    table = ReliabilityTable(
        _evaluation(
            {
                "AFIB": _row("atrial fibrillation", 8, 0.897, 0.625, 0.846),  # few positives
                "SR": _row("sinus rhythm", 141, 0.822, 0.965, 0.583),
                "CD": _row("conduction disturbance", 30, 0.73, 0.633, 0.782),  # low AUC
            }
        )
    )
    af, sr, cd = (table.finding(n) for n in ("atrial fibrillation", "sinus rhythm", "conduction disturbance"))
    assert af["status"] == "below_floor" and af["warnings"] == [W.FINDING_FEW_POSITIVES]
    assert cd["status"] == "below_floor" and cd["warnings"] == [W.FINDING_LOW_AUC]
    assert sr["status"] == "validated" and sr["warnings"] == []
    # AF: 5 of 8 positives called, 26 of 169 negatives called -> PPV 5/31
    assert af["ppv"] == round(5 / 31, 4) and af["npv"] == round(143 / 146, 4)
    assert af["sensitivity_ci95"] == wilson(5, 8) and af["ppv_ci95"] == wilson(5, 31)
    unknown = table.finding("digitalis effect")
    assert unknown["status"] == "not_validated" and unknown["warnings"] == [W.FINDING_NOT_VALIDATED]
    assert unknown["auc"] is None and set(unknown) == set(af)
    summary = table.summary(["sinus rhythm", "atrial fibrillation"])
    assert summary["status"] == "below_floor" and summary["floor"] == {
        "min_positives": MIN_POSITIVES,
        "min_auc": MIN_AUC,
    }
    assert [r["finding"] for r in summary["findings"]] == ["sinus rhythm", "atrial fibrillation"]
    assert summary["source"] == "PTB-XL fold 10 (177 records), template wording"
    assert table.summary(["digitalis effect"])["status"] == "not_validated"


def test_templates_are_judged_against_the_majority_answer() -> None:
    table = ReliabilityTable(_evaluation({}))
    assert table.template(12)["warnings"] == [W.TEMPLATE_NOT_BETTER_THAN_MAJORITY]
    assert table.template(3) == {
        "template_id": 3,
        "n": 40,
        "exact_match": 0.8,
        "majority_baseline": 0.6,
        "warnings": [],
    }
    assert table.template(7) is None
    assert table.summary([], template_id=3)["status"] == "validated"
    assert table.summary([], template_id=12)["status"] == "below_floor"


def test_newer_evaluations_with_more_keys_and_calibrated_thresholds_still_read() -> None:
    row = _row("atrial fibrillation", 20, 0.9, 0.8, 0.9, ppv=0.42, auc_ci95=[0.8, 0.95], brier=0.1)
    table = ReliabilityTable(
        _evaluation({"AFIB": row, "X": "not a row"}),
        calibration={"atrial fibrillation": {"a": 1.0, "b": 0.0, "threshold": 0.3}},
    )
    af = table.finding("atrial fibrillation")
    assert af["ppv"] == 0.42 and af["auc_ci95"] == [0.8, 0.95]  # the evaluation's own numbers win
    assert af["decision"] == "calibrated p(present) >= 0.3"
    assert ReliabilityTable(None).summary(["x"])["status"] == "not_validated"
    assert ReliabilityTable({}).source == "the bundle's held-out evaluation"


def test_the_shipped_bundle_flags_what_the_issue_measured() -> None:
    manifest = json.loads((default_bundle() / MANIFEST_NAME).read_text(encoding="utf-8"))
    table = ReliabilityTable.from_manifest(manifest)
    per = manifest["evaluation"]["findings"]["template"]["model"]["per_finding"]
    for row in per.values():  # the floor, applied to the shipped bundle's own held-out numbers
        got = table.finding(row["name"])
        expected = ([W.FINDING_FEW_POSITIVES] if row["n_pos"] < 10 else []) + (
            [W.FINDING_LOW_AUC] if row["auc"] < 0.75 else []
        )
        assert got["warnings"] == expected, (row["name"], got["warnings"])
        assert got["auc"] == pytest.approx(row["auc"], abs=1e-4) and 0 <= got["ppv"] <= 1
    assert table.finding("sinus bradycardia")["warnings"] == [W.FINDING_FEW_POSITIVES]  # rare, but read well
    assert table.finding("normal ecg")["status"] == "validated"
    catalogue_findings = manifest["questions"]["templates"][0]["attributes"]
    unvalidated = [f for f in catalogue_findings if table.finding(f)["status"] == "not_validated"]
    assert len(unvalidated) > 40  # the evaluation covers few of the 63 findings; the rest say so


def test_notes_carry_known_codes() -> None:
    assert Note(W.RECORD, "x").to_dict() == {"code": "RECORD", "message": "x"}
    assert str(Note(W.RECORD, "x")) == "x"
    assert all(code == code.upper() and text for code, text in WARNING_CODES.items())
    with pytest.raises(ValueError, match="not a warning code"):
        Note("NOPE", "x")

"""English report rendering from PTB-XL statements, on the real shared data."""

from __future__ import annotations

import pytest

from diagecg.datasets.ptbxl import PtbxlDataset, PtbxlEntry
from diagecg.datasets.reports import load_scp_table, report_text
from diagecg.types import PatientInfo


def _entry(codes: dict[str, float], report_de: str = "") -> PtbxlEntry:
    return PtbxlEntry(
        ecg_id=0, patient_id=None, strat_fold=1, scp_codes=codes, report_de=report_de, patient=PatientInfo()
    )


def test_scp_table_has_the_71_statements_with_flags(scp_table):
    assert len(scp_table) == 71
    assert scp_table["SBRAD"].rhythm and scp_table["SBRAD"].category == "rhythm"
    ndt = scp_table["NDT"]
    assert ndt.diagnostic and ndt.form and ndt.category == "diagnostic" and ndt.diagnostic_class == "STTC"
    assert scp_table["ABQRS"].category == "form" and scp_table["ABQRS"].diagnostic_class is None
    assert scp_table["IMI"].description == "inferior myocardial infarction"


def test_report_text_of_a_known_record(ptbxl_root, scp_table):
    ds = PtbxlDataset(ptbxl_root)
    entry = ds.entries[2]  # NORM 80 + SBRAD
    text = report_text(entry, scp_table)
    assert text == "sinus bradycardia. normal ecg."
    assert "sinus bradycardia" in text
    assert report_text(entry, scp_table, language="de") == "sinusbradykardie sonst normales ekg"


def test_report_text_orders_rhythm_diagnostic_form(scp_table):
    entry = _entry({"ABQRS": 0.0, "NDT": 100.0, "IMI": 50.0, "SR": 0.0})
    assert report_text(entry, scp_table) == (
        "sinus rhythm. non-diagnostic t abnormalities. inferior myocardial infarction. abnormal qrs."
    )
    assert report_text(_entry({}), scp_table) == ""


def test_report_text_rejects_bad_input(scp_table):
    with pytest.raises(ValueError, match="XYZ"):
        report_text(_entry({"XYZ": 0.0}), scp_table)
    with pytest.raises(ValueError, match="language"):
        report_text(_entry({"SR": 0.0}), scp_table, language="fr")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        load_scp_table("/nonexistent")

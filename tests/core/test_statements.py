"""diagecg.statements: the coded-statement table against its sources, and what answers assert."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from diagecg.bundle import default_bundle, load_bundle
from diagecg.io import read_record
from diagecg.question_templates import NORMAL_ECG_TEMPLATE, TEMPLATES, QuestionType
from diagecg.statements import BY_CODE, STATEMENTS, answer_findings, coded_statements, find_statement

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CHALLENGE = FIXTURES / "challenge"
SCP_TABLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ptbxl" / "scp_statements.csv"


def _challenge_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for name in ("dx_mapping_scored.csv", "dx_mapping_unscored.csv"):
        with (CHALLENGE / name).open(newline="") as f:
            names.update({row["SNOMEDCTCode"]: row["Dx"] for row in csv.DictReader(f)})
    return names


def test_every_snomed_concept_is_the_challenge_tables_code_and_name() -> None:
    names = _challenge_names()
    coded = [st for st in STATEMENTS if st.snomed is not None]
    assert len(coded) >= 50
    wrong = [
        (st.code, st.snomed) for st in coded if st.snomed and names.get(st.snomed.code) != st.snomed.term
    ]
    assert not wrong


@pytest.mark.skipif(not SCP_TABLE.is_file(), reason="needs ../shared/data/ptbxl/scp_statements.csv")
def test_the_71_scp_statements_have_ptbxls_codes_and_descriptions() -> None:
    with SCP_TABLE.open(newline="") as f:
        table = {row[""]: row["description"] for row in csv.DictReader(f)}
    scp = {st.code: st.description for st in STATEMENTS if st.system == "SCP-ECG"}
    assert scp == table


def test_the_challenge_fixtures_dx_code_is_its_ptbxl_statement() -> None:
    # C00002 is PTB-XL record 2 (sinus bradycardia) as the Challenge released it: #Dx 426177001
    record = read_record(FIXTURES / "records" / "C00002.hea")
    assert record.diagnoses == ["426177001"]
    by_snomed = {st.snomed.code: st for st in STATEMENTS if st.snomed and st.snomed.match == "exact"}
    assert by_snomed["426177001"].code == "SBRAD"


def test_every_finding_option_of_the_shipped_catalogue_is_coded() -> None:
    catalogue = load_bundle(default_bundle(), check_models=False).questions
    assert catalogue is not None
    groups = ("code", "dx_inc", "dx_exc", "form", "rhythm", "superclass", "norm")
    findings = {
        o
        for e in catalogue.entries.values()
        if e.group in groups
        for o in (*e.options, *e.attributes)
        if o not in ("yes", "no", "not sure", "none")
    }
    assert len(findings) > 40
    assert sorted(o for o in findings if find_statement(o) is None) == []


@pytest.mark.parametrize(
    "text, code",
    [
        ("sinus rhythm", "SR"),
        ("Sinus rhythm.", "SR"),
        ("ATRIAL FIBRILLATION", "AFIB"),
        ("myocardial infarction in inferior leads", "IMI"),
        ("digitalis effect", "DIG"),
        ("bigeminal pattern (unknown origin, supraventricular, or ventricular)", "BIGU"),
        ("left axis deviation", "LAD"),
        ("normal ecg", "NORM"),
    ],
)
def test_find_statement_reads_ptbxl_and_ecgqa_spellings(text: str, code: str) -> None:
    st = find_statement(text)
    assert st is not None and st.code == code


def test_coded_statements_keep_unknown_text_and_drop_repeats() -> None:
    out = coded_statements([("sinus rhythm", True), ("Sinus rhythm", True), ("left type", True)])
    assert [(o["text"], o["code"]) for o in out] == [("sinus rhythm", "SR"), ("left type", None)]
    assert out[0]["snomed_ct"] == {"code": "426783006", "term": "sinus rhythm", "match": "exact"}
    assert out[1]["snomed_ct"] is None and out[1]["present"] is True


def test_what_each_kind_of_answer_asserts() -> None:
    afib = ("atrial fibrillation",)
    assert answer_findings("single-verify", afib, {"yes"}) == [("atrial fibrillation", True)]
    assert answer_findings("single-verify", afib, {"no"}) == [("atrial fibrillation", False)]
    assert answer_findings("single-verify", afib, {"not sure"}) == []
    normal = BY_CODE["NORM"].description
    asks_normal = TEMPLATES[NORMAL_ECG_TEMPLATE].statement
    assert answer_findings(QuestionType.VERIFY, (), {"no"}, statement=asks_normal) == [(normal, False)]
    assert answer_findings(QuestionType.VERIFY, (), {"yes"}, statement=asks_normal) == [(normal, True)]
    both = ("sinus rhythm", "atrial fibrillation")
    assert answer_findings("single-choose", both, {"atrial fibrillation"}) == [
        ("sinus rhythm", False),
        ("atrial fibrillation", True),
    ]
    assert answer_findings("single-choose", both, {"none"}) == [
        ("sinus rhythm", False),
        ("atrial fibrillation", False),
    ]
    assert answer_findings("single-query", (), {"sinus rhythm", "atrial flutter"}) == [
        ("atrial flutter", True),
        ("sinus rhythm", True),
    ]
    assert answer_findings("single-query", (), {"none"}) == []
    assert answer_findings(None, afib, {"yes"}) == []

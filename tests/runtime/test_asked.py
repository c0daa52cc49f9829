"""Questions answered as asked, end to end with the tiny bundle and its catalogue: negations inverted,
refusals explained, statements with probabilities and no contradictions, reliability and warning codes,
and the CLI's plain line, ``--show-probability``, ``-q`` and ``--sex``."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

from diagecg.bundle import default_bundle
from diagecg.cli import main
from diagecg.cli_options import ExitCode
from diagecg.consistency import contradicting_pairs
from diagecg.constants import MANIFEST_NAME
from diagecg.io import read_record
from diagecg.notes import WARNING_CODES, W
from diagecg.polarity import invert_answer
from diagecg.questions import MatchedQuestion
from diagecg.runtime.answering import StatementReader
from diagecg.runtime.pipeline import DiagEcgPipeline, answer_schema

AF = "Does this ECG show symptoms of atrial fibrillation?"


@pytest.fixture(scope="module")
def evaluated_bundle(catalogue_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle with the shipped bundle's question catalogue and held-out evaluation."""
    dst = tmp_path_factory.mktemp("evaluated") / "bundle"
    shutil.copytree(catalogue_bundle, dst)
    manifest = json.loads((dst / MANIFEST_NAME).read_text())
    shipped = json.loads((default_bundle() / MANIFEST_NAME).read_text())
    manifest["evaluation"], manifest["questions"] = shipped["evaluation"], shipped["questions"]
    (dst / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return dst


@pytest.fixture(scope="module")
def pipe(evaluated_bundle: Path):
    with DiagEcgPipeline.from_bundle(evaluated_bundle, device="cpu", threads=1) as p:
        yield p


def _opts(bundle: Path) -> list[str]:
    return ["--bundle", str(bundle), "--device", "cpu", "--threads", "1"]


@pytest.mark.parametrize(
    "negated", ["Is AF absent?", "Is there no atrial fibrillation?", "Can you exclude AF?", "no AF?"]
)
def test_a_negated_question_gets_the_inverted_answer_of_the_catalogue_question(
    pipe: DiagEcgPipeline, record_paths: list[Path], negated: str
) -> None:
    plain, asked = pipe.answer(record_paths[0], "AF?"), pipe.answer(record_paths[0], negated)
    p, q = plain.option_probabilities, asked.option_probabilities
    assert p is not None and q is not None
    assert (q["yes"], q["no"], q["not sure"]) == (p["no"], p["yes"], p["not sure"])
    assert asked.answer == invert_answer(plain.answer) and asked.confidence == q[asked.answer]
    assert asked.matched_question is not None and plain.matched_question is not None
    assert asked.matched_question["polarity"] == "negated"
    assert plain.matched_question["polarity"] == "positive"
    assert asked.matched_question["canonical"] == AF  # what the model was asked, the same for both
    assert asked.statements == plain.statements  # AF present or not: the same finding either way
    assert [w["answer"] for w in asked.windows] == [invert_answer(w["answer"]) for w in plain.windows]
    jsonschema.validate(asked.to_dict(), answer_schema())


def test_normal_and_abnormal_are_one_question_answered_both_ways(
    pipe: DiagEcgPipeline, record_paths: list[Path]
) -> None:
    for path in record_paths:
        normal, abnormal = (pipe.answer(path, q) for q in ("Is this ECG normal?", "Is the ECG abnormal?"))
        assert {normal.answer, abnormal.answer} == {"yes", "no"}, path
        assert normal.confidence == abnormal.confidence


def test_refused_questions_say_why_and_what_to_ask(pipe: DiagEcgPipeline, record_paths: list[Path]) -> None:
    a = pipe.answer(record_paths[0], "Is the rhythm regular?")
    assert a.question_supported is False and a.answer == "" and a.refusal is not None
    assert a.refusal["reason"] == "no_such_finding"
    assert a.refusal["suggestions"][0] == "Does this ECG show symptoms of sinus rhythm?"
    assert [w.code for w in a.warnings if w.code == W.QUESTION_UNSUPPORTED] == [W.QUESTION_UNSUPPORTED]
    jsonschema.validate(a.to_dict(), answer_schema())


def test_every_answer_says_how_far_it_can_be_trusted(pipe: DiagEcgPipeline, record_paths: list[Path]) -> None:
    af = pipe.answer(record_paths[0], "AF?")
    rel = af.reliability
    assert rel is not None and rel["status"] == "below_floor"
    (row,) = rel["findings"]
    evaluated = pipe.bundle.manifest["evaluation"]["findings"]["template"]["model"]["per_finding"]["AFIB"]
    assert row["finding"] == "atrial fibrillation" and row["n_positives"] == evaluated["n_pos"] < 10
    assert row["auc"] == pytest.approx(evaluated["auc"], abs=1e-4) and row["ppv"] is not None
    codes = {w.code for w in af.warnings}
    assert W.FINDING_FEW_POSITIVES in codes
    assert (W.FINDING_LOW_PPV in codes) == af.statements[0]["present"]  # only a "yes" is warned of its PPV
    unvalidated = pipe.answer(record_paths[0], "Digitalis effect?")
    assert unvalidated.reliability is not None and unvalidated.reliability["status"] == "not_validated"
    assert W.FINDING_NOT_VALIDATED in {w.code for w in unvalidated.warnings}
    choice = pipe.answer(record_paths[0], "Is the rhythm atrial fibrillation or sinus rhythm?")
    assert choice.reliability is not None and choice.reliability["template"] is not None
    broader = pipe.answer(record_paths[0], "Is there heart block?")
    assert W.QUESTION_BROADER in {w.code for w in broader.warnings}
    assert all(w.code in WARNING_CODES for a in (af, unvalidated, choice, broader) for w in a.warnings)


def test_statements_carry_probabilities_and_reports_never_contradict_themselves(
    pipe: DiagEcgPipeline, record_paths: list[Path], fixtures_dir: Path
) -> None:
    n_reports = n_contradictions = 0
    records = [*record_paths, *sorted((fixtures_dir / "formats" / "muse").glob("*.xml"))]
    for path in records:
        report = pipe.report(path)
        present = [s["text"] for s in report.statements if s["present"]]
        n_contradictions += len(contradicting_pairs(present))
        n_reports += 1
        assert report.confidence is None
        jsonschema.validate(report.to_dict(), answer_schema())
    assert n_reports >= 6 and n_contradictions == 0
    verify = pipe.answer(record_paths[0], "AF?")
    (st,) = verify.statements
    assert verify.option_probabilities is not None
    assert st["probability"] == pytest.approx(1 - verify.option_probabilities["no"], abs=1e-6)


def test_windows_and_statements_are_combined_by_one_rule(pipe: DiagEcgPipeline) -> None:
    """The statement reader keeps a statement when the window with the most evidence of it answers yes,
    "normal ECG" only when every window is normal, and resolves what is left by probability."""
    q = pipe.bundle.questions
    assert q is not None
    # window 0 reads normal, window 1 reads an inferior infarction (the Philips case of issue 22)
    readings = {
        0: {"normal ecg": 0.9, "myocardial infarction in inferior leads": 0.1, "sinus rhythm": 0.95},
        1: {"normal ecg": 0.2, "myocardial infarction in inferior leads": 0.7, "sinus rhythm": 0.9},
    }

    def score(k: int, question: MatchedQuestion) -> dict:
        name = "normal ecg" if question.template_id == 2 else question.attributes[0]
        p = readings[k].get(name, 0.0)
        probs = {"no": 1 - p, "yes": p}
        if question.template_id != 2:
            probs["not sure"] = 0.0
        return {"text": "yes" if p >= 0.5 else "no", "option_probabilities": probs}

    reader = StatementReader(q, score, 2)
    text, probs, notes = reader.report(
        ["sinus rhythm. normal ecg.", "sinus rhythm. inferior myocardial infarction."]
    )
    assert text == "Sinus rhythm. Inferior myocardial infarction."
    assert probs == {"sinus rhythm": 0.95, "inferior myocardial infarction": 0.7}
    assert [n.code for n in notes] == [W.STATEMENT_NOT_CONFIRMED]  # normal: the least normal window says no
    answer, _, _ = reader.query(["sinus rhythm; atrial fibrillation", "none"])
    assert answer == "sinus rhythm"  # AF is not a finding either window confirms (no reading: p = 0)


def test_a_near_copy_window_is_not_analysed_twice(pipe: DiagEcgPipeline, record_paths: list[Path]) -> None:
    rec = read_record(record_paths[0])
    longer = dataclasses.replace(rec, signal=np.concatenate([rec.signal, rec.signal[:, :60]], axis=1))
    ans = pipe.answer(longer, "AF?")  # 10.6 s
    assert [(w["start_s"], w["end_s"]) for w in ans.windows] == [(0.0, 10.0)]
    assert W.RECORD_PART_NOT_ANALYSED in {w.code for w in ans.warnings}


def test_plain_output_says_what_was_answered_and_how_sure(
    evaluated_bundle: Path, record_paths: list[Path]
) -> None:
    rec = str(record_paths[0])
    exact = CliRunner().invoke(main, ["infer", rec, "-q", AF, "--quiet", *_opts(evaluated_bundle)])
    assert exact.exit_code == 0 and exact.stdout.strip() in ("yes", "no", "not sure")  # just the answer
    opts = _opts(evaluated_bundle)
    js = json.loads(CliRunner().invoke(main, ["infer", rec, "-q", AF, "--json", *opts]).stdout)
    negated = CliRunner().invoke(main, ["infer", rec, "-q", "Is AF absent?", "--quiet", *opts])
    (line,) = negated.stdout.splitlines()
    p = js["option_probabilities"][js["answer"]]
    assert line == f'{invert_answer(js["answer"])}  (as "{js["answer"]}" to "{AF}"; p = {p:.2f})'
    shown = CliRunner().invoke(
        main, ["infer", rec, "-q", AF, "--show-probability", "--quiet", *_opts(evaluated_bundle)]
    )
    assert shown.stdout.strip() == f"{js['answer']}  (p = {p:.2f})"
    warned = CliRunner().invoke(main, ["infer", rec, "-q", "AF?", *_opts(evaluated_bundle)])
    assert "warning [FINDING_FEW_POSITIVES]: atrial fibrillation" in warned.stderr


def test_q_is_the_question_and_sex_takes_dicom_letters(
    evaluated_bundle: Path, record_paths: list[Path]
) -> None:
    rec, opts = str(record_paths[0]), _opts(evaluated_bundle)
    report = CliRunner().invoke(main, ["report", rec, "-q", "AF?", *_opts(evaluated_bundle)])
    assert report.exit_code == ExitCode.USAGE and "report takes no question" in report.stderr
    assert "diagecg infer RECORD -q 'AF?'" in report.stderr
    for given, sex in (("F", "female"), ("m", "male"), ("Female", "female"), ("MALE", "male")):
        out = CliRunner().invoke(main, ["infer", rec, "-q", "AF?", "--sex", given, "--json", *opts])
        assert out.exit_code == 0, out.output
        assert json.loads(out.stdout)["patient"]["sex"] == sex
    bad = CliRunner().invoke(main, ["infer", rec, "-q", "AF?", "--sex", "x", *_opts(evaluated_bundle)])
    assert bad.exit_code == ExitCode.USAGE and "one of male, female, M, F" in bad.stderr


def test_questions_lists_semantics_and_reliability(evaluated_bundle: Path) -> None:
    text = CliRunner().invoke(main, ["questions", "--bundle", str(evaluated_bundle)])
    assert text.exit_code == 0, text.output
    assert "means: ECG-QA's 'abnormal symptoms' are any statement other than 'normal ECG'" in text.stdout
    assert "How far each finding can be trusted" in text.stdout
    af = next(line for line in text.stdout.splitlines() if line.strip().startswith("atrial fibrillation "))
    shipped = json.loads((default_bundle() / MANIFEST_NAME).read_text())["evaluation"]
    row = shipped["findings"]["template"]["model"]["per_finding"]["AFIB"]
    assert row["n_pos"] < 10 and "below_floor" in af and "FINDING_FEW_POSITIVES" in af
    assert f"{row['auc']:.2f}" in af
    assert "not validated (FINDING_NOT_VALIDATED)" in text.stdout
    as_json = CliRunner().invoke(main, ["questions", "--bundle", str(evaluated_bundle), "--json"])
    data = json.loads(as_json.stdout)
    assert set(data["semantics"]) >= {"1", "2", "12", "16"}
    rows = {r["finding"]: r for r in data["reliability"]["findings"]}
    assert rows["sinus bradycardia"]["warnings"] == ["FINDING_FEW_POSITIVES"]  # rare, read well (AUC > 0.75)
    assert rows["digitalis effect"]["status"] == "not_validated"
    assert data["reliability"]["floor"] == {"min_positives": 10, "min_auc": 0.75}


def _fake_reader(
    pipe: DiagEcgPipeline,
    present: dict[str, float],
    validated: frozenset[str] | None = None,
    thresholds: dict[str, float] | None = None,
) -> StatementReader:
    """A reader of one window whose yes/no answers say p(present) as given (0.05 for the rest)."""
    q = pipe.bundle.questions
    assert q is not None

    def score(k: int, question: MatchedQuestion) -> dict:
        name = "normal ecg" if question.template_id == 2 else question.attributes[0]
        p = present.get(name, 0.05)
        probs = {"no": 1 - p, "yes": p}
        if question.template_id != 2:
            probs["not sure"] = 0.0
        cut = (thresholds or {}).get(name, 0.5)
        return {"text": "yes" if p >= cut else "no", "option_probabilities": probs}

    return StatementReader(q, score, 1, validated, thresholds=thresholds)


def _verify(reader: StatementReader, question: str) -> tuple[str, list[str]]:
    catalogue = reader.catalogue
    match = catalogue.match(question)
    assert match is not None
    reply = reader.score(0, match)
    text, _, notes = reader.verify(match, reply["text"], reply["option_probabilities"])
    return text, [n.code for n in notes]


def test_one_rule_keeps_answers_about_a_record_consistent(pipe: DiagEcgPipeline) -> None:
    lbbb, cd = "complete left bundle branch block", "conduction disturbance"
    reader = _fake_reader(pipe, {lbbb: 0.6, cd: 0.3, "sinus bradycardia": 0.7, "sinus tachycardia": 0.6})
    # a finding implies its class: LBBB yes -> conduction disturbance yes, though the model said no to it
    assert _verify(reader, "LBBB?") == ("yes", [])
    assert _verify(reader, "Is there a conduction disturbance?") == ("yes", [W.ANSWER_FROM_MEMBER])
    # of two findings no ECG has together, the more probable is yes, the other no, whichever is asked
    assert _verify(reader, "Sinus bradycardia?") == ("yes", [])
    assert _verify(reader, "Sinus tachycardia?") == ("no", [W.ANSWER_CONTRADICTED])
    # normal (0.9) beats an inferior MI (0.6): the MI, and its class, are no; normal stays yes
    reader = _fake_reader(
        pipe,
        {
            "normal ecg": 0.9,
            "myocardial infarction in inferior leads": 0.6,
            "sinus bradycardia": 0.7,
            "sinus tachycardia": 0.6,
        },
    )
    assert _verify(reader, "Inferior MI?") == ("no", [W.ANSWER_CONTRADICTED])
    assert _verify(reader, "Is there a myocardial infarction?") == ("no", [W.ANSWER_CONTRADICTED])
    assert _verify(reader, "Is this a normal ECG?") == ("yes", [])
    # the same rule keeps a report's statements
    text, _, notes = reader.report(["sinus bradycardia. sinus tachycardia. inferior myocardial infarction."])
    assert text == "Sinus bradycardia." and {n.code for n in notes} == {W.STATEMENT_CONTRADICTED}


def test_an_unvalidated_reading_never_overrules_a_validated_one(pipe: DiagEcgPipeline) -> None:
    af, sarrh = "atrial fibrillation", "sinus arrhythmia"
    # the shipped bundle on 00318 (labelled AF): sinus arrhythmia (never validated) 0.83, AF (validated) 0.81
    reader = _fake_reader(pipe, {af: 0.81, sarrh: 0.83}, validated=frozenset({af}))
    assert _verify(reader, "AF?") == ("yes", [])
    assert _verify(reader, "Sinus arrhythmia?") == ("no", [W.ANSWER_CONTRADICTED])
    # without validation numbers for either, probability decides, whichever is asked
    reader = _fake_reader(pipe, {af: 0.81, sarrh: 0.83})
    assert _verify(reader, "AF?") == ("no", [W.ANSWER_CONTRADICTED])
    assert _verify(reader, "Sinus arrhythmia?") == ("yes", [])
    # a rival the rule itself overrules does not overrule: incomplete RBBB 0.9 drops complete RBBB 0.85,
    # so complete LBBB 0.8 stands (it contradicts complete RBBB, not incomplete RBBB)
    lbbb, rbbb, irbbb = (
        "complete left bundle branch block",
        "complete right bundle branch block",
        "incomplete right bundle branch block",
    )
    reader = _fake_reader(pipe, {lbbb: 0.8, rbbb: 0.85, irbbb: 0.9}, validated=frozenset({lbbb, rbbb, irbbb}))
    assert _verify(reader, "Complete RBBB?") == ("no", [W.ANSWER_CONTRADICTED])
    assert _verify(reader, "Complete LBBB?") == ("yes", [])
    assert _verify(reader, "Incomplete RBBB?") == ("yes", [])
    # calibrated: each reading is weighed against its own threshold (log-odds margin), so a rare finding
    # well past its low threshold stands against a common one barely past its high threshold
    reader = _fake_reader(
        pipe,
        {af: 0.3, "sinus rhythm": 0.8},
        validated=frozenset({af, "sinus rhythm"}),
        thresholds={af: 0.1, "sinus rhythm": 0.75},
    )
    assert _verify(reader, "AF?") == ("yes", [])
    assert _verify(reader, "Sinus rhythm?") == ("no", [W.ANSWER_CONTRADICTED])
    # both validated: probability decides
    reader = _fake_reader(pipe, {af: 0.81, sarrh: 0.83}, validated=frozenset({af, sarrh}))
    assert _verify(reader, "AF?") == ("no", [W.ANSWER_CONTRADICTED])


QUESTIONS = [
    "Is this ECG normal?",
    "Is the ECG abnormal?",
    "AF?",
    "Sinus rhythm?",
    "Sinus bradycardia?",
    "Sinus tachycardia?",
    "LBBB?",
    "RBBB?",
    "Incomplete RBBB?",
    "Conduction disturbance?",
    "MI?",
    "Inferior MI?",
    "Anteroseptal MI?",
    "Hypertrophy?",
    "LVH?",
    "Atrial flutter?",
]


def test_answers_and_reports_about_the_fixture_records_never_contradict_each_other(
    pipe: DiagEcgPipeline, record_paths: list[Path], fixtures_dir: Path
) -> None:
    """Every fixture record (PTB-XL, Challenge, MUSE, HL7 aECG, DICOM, Philips where the readers are
    installed) is asked about findings that imply or exclude each other, and reported: the number of
    contradictory answer pairs, answers against their class, and contradictory reports is 0."""
    formats = [
        p for p in sorted((fixtures_dir / "formats").rglob("*")) if p.suffix.lower() in (".xml", ".dcm")
    ]
    n_records = n_pairs = n_class = n_reports = 0
    for path in [*record_paths, *formats]:
        try:
            answers = {q: pipe.answer(path, q) for q in QUESTIONS}
        except Exception:  # a format whose reader is not installed, or a file no reader takes
            continue
        n_records += 1
        yes = {
            a.statements[0]["text"] if a.statements else q
            for q, a in answers.items()
            if a.statements and a.statements[0]["present"]
        }
        n_pairs += len(contradicting_pairs(sorted(yes)))
        n_pairs += answers["Is this ECG normal?"].answer == answers["Is the ECG abnormal?"].answer
        members = {"LBBB?", "RBBB?", "Incomplete RBBB?"}
        n_class += (
            any(answers[m].answer == "yes" for m in members)
            and answers["Conduction disturbance?"].answer == "no"
        )
        n_class += (
            any(answers[m].answer == "yes" for m in ("Inferior MI?", "Anteroseptal MI?"))
            and answers["MI?"].answer == "no"
        )
        n_class += answers["LVH?"].answer == "yes" and answers["Hypertrophy?"].answer == "no"
        report = pipe.report(path)
        n_reports += bool(contradicting_pairs([s["text"] for s in report.statements if s["present"]]))
    assert n_records >= 8
    assert (n_pairs, n_class, n_reports) == (0, 0, 0)


def test_the_schema_lists_every_warning_code_and_refusal_reason() -> None:
    from diagecg.questions import REFUSAL_REASONS
    from diagecg.runtime.pipeline import SCHEMA_VERSION

    schema = answer_schema()
    enums: list[list[str]] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "ENGINE" in node.get("enum", ()):
                enums.append(node["enum"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    assert len(enums) >= 3 and all(e == sorted(WARNING_CODES) for e in enums)
    from diagecg.runtime.pipeline import IMPLAUSIBLE_RECORD

    reliability = schema["$defs"]["answer"]["properties"]["reliability"]["oneOf"][1]["properties"]
    assert IMPLAUSIBLE_RECORD in reliability["status"]["enum"]
    refusal = schema["$defs"]["answer"]["properties"]["refusal"]["oneOf"][1]["properties"]["reason"]["enum"]
    assert refusal == list(REFUSAL_REASONS)
    assert schema["$defs"]["answer"]["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert SCHEMA_VERSION == 4

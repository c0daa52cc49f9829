"""``diagecg validate`` / ``diagecg calibrate``: a site's labels, its numbers, and a re-calibrated bundle, on
real records only (PTB-XL fold 10 with a labels CSV written from ptbxl_labels.csv, the other hospitals'
Challenge records with their #Dx headers)."""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from diagecg.bundle import load_bundle
from diagecg.cli import main
from diagecg.errors import InputError
from diagecg.labels import labels_from_diagnoses, read_labels
from diagecg.runtime.pipeline import DiagEcgPipeline
from diagecg.runtime.validate import Row, collect, fit_site_calibration, score, write_calibrated_bundle
from diagecg.scoring import roc_auc

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "diagecg" / "bundles" / "default"


@pytest.fixture(scope="module")
def pipe():
    with DiagEcgPipeline.from_bundle(BUNDLE, device="cpu", threads=1) as p:
        yield p


def _fold10(ptbxl_root: Path, n: int) -> list[dict[str, str]]:
    rows = [r for r in csv.DictReader((ptbxl_root / "ptbxl_labels.csv").open()) if r["strat_fold"] == "10"]
    return rows[:n]


def _record(ptbxl_root: Path, ecg_id: int) -> Path:
    return next((ptbxl_root / "records100").glob(f"*/{ecg_id:05d}_lr.hea"))


def _labels_csv(rows: list[dict[str, str]], path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, ["ecg_id", "scp_codes", "diagnostic_superclass"])
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in ("ecg_id", "scp_codes", "diagnostic_superclass")})
    return path


def test_challenge_headers_map_snomed_codes_and_cpsc_abbreviations(shared_data: Path) -> None:
    headers = sorted((shared_data / "other_hospitals").glob("*.hea"))
    assert len(headers) >= 40
    unmapped: Counter[str] = Counter()
    n_af = 0
    for h in headers:
        dx = next(line.split(":", 1)[1] for line in h.read_text().splitlines() if line.startswith("#Dx"))
        codes = [c.strip() for c in dx.split(",")]
        lab = labels_from_diagnoses(codes, unmapped)
        assert lab["AFIB"] == ("164889003" in codes)  # listed: present; not listed: absent
        n_af += lab["AFIB"]
        assert "NDT" not in lab  # a finding SNOMED cannot name exactly stays unknown, never "absent"
    assert n_af > 0 and sum(unmapped.values()) > 0  # codes without a finding are counted, not dropped
    cpsc = labels_from_diagnoses(["AF", "I-AVB"])
    assert cpsc["AFIB"] and cpsc["1AVB"] and cpsc["NORM"] is False and "SBRAD" not in cpsc


def test_labels_csv_ptbxl_and_plain_layouts(ptbxl_root: Path, tmp_path: Path) -> None:
    rows = _fold10(ptbxl_root, 20)
    labels = read_labels(_labels_csv(rows, tmp_path / "ptbxl.csv"))
    for r in rows:
        lab = labels.of(f"{int(r['ecg_id']):05d}_lr")
        assert lab is not None
        present = {c for c, v in lab.items() if v}
        scp = set(ast.literal_eval(r["scp_codes"]))
        assert present == (scp | set(ast.literal_eval(r["diagnostic_superclass"]))) & set(lab)
    plain = tmp_path / "plain.csv"
    plain.write_text(
        "record,finding,present\n00180_lr,CLBBB,1\n00180_lr,164889003,no\n"
        "00180_lr,sinus bradycardia,false\nrecords/00057_lr.hea,normal ECG,yes\n"
        "00057_lr,XYZ,1\n"
    )
    labels = read_labels(plain)
    assert labels.of("00180_lr") == {"CLBBB": True, "AFIB": False, "SBRAD": False}
    assert labels.of("00057_lr") == {"NORM": True} and labels.unmapped == Counter({"XYZ": 1})
    plain.write_text("record,finding,present\n00180_lr,CLBBB,maybe\n")
    with pytest.raises(InputError, match="maybe"):
        read_labels(plain)
    with pytest.raises(InputError, match="neither"):
        read_labels(_write(tmp_path / "bad.csv", "a,b\n1,2\n"))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_validate_scores_the_answers_the_product_gives_and_matches_the_bench(
    pipe: DiagEcgPipeline, shared_data: Path, tmp_path: Path
) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from ecg_dependence import challenge_findings  # the bench's whole-record numbers on the same records

    folder = tmp_path / "hospitals"
    folder.mkdir()
    for h in sorted((shared_data / "other_hospitals").glob("*.hea"))[:14]:
        for f in h.parent.glob(h.stem + ".*"):
            shutil.copy(f, folder / f.name)
    bench = challenge_findings(pipe, folder, progress=False)["whole_record"]["model"]["per_finding"]
    codes = ["AFIB", "CRBBB", "1AVB", "PVC", "SBRAD", "STACH"]
    got = collect(pipe, sorted(folder.glob("*.hea")), None, only=codes, progress=False)
    ours = score(got.rows, min_positives=1, n_bootstrap=0)["findings"]
    compared = 0
    for code in codes:
        if code in ours and code in bench and not np.isnan(bench[code]["auc"]):
            assert ours[code]["auc"] == pytest.approx(bench[code]["auc"], abs=1e-4), code
            compared += 1
    assert compared >= 2
    # the rows are what the product answers
    row = got.rows[0]
    question = pipe.bundle.questions.finding_question(row.finding)
    ans = pipe.answer(row.record, question.canonical)
    assert row.said_present == (ans.answer != "no")
    assert row.p_present == pytest.approx(1 - ans.option_probabilities["no"])


def test_validate_command_writes_json_rows_and_an_offline_html_page(ptbxl_root: Path, tmp_path: Path) -> None:
    rows = _fold10(ptbxl_root, 12)
    labels = _labels_csv(rows, tmp_path / "labels.csv")
    records = [str(_record(ptbxl_root, int(r["ecg_id"]))) for r in rows] + [str(tmp_path / "missing.hea")]
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main,
        [
            "validate",
            *records,
            "--labels",
            str(labels),
            "--finding",
            "NORM",
            "--finding",
            "CD",
            "--min-positives",
            "1",
            "--bootstrap",
            "50",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--quiet",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 1, res.output  # one record failed: listed, the others answered
    result = json.loads((out / "validation.json").read_text())
    assert result["schema"] == "diagecg.validation" and result["schema_version"] == 1
    assert result["records"]["answered"] == 12 and result["records"]["given"] == 13
    assert result["records"]["failed"][0]["record"].endswith("missing.hea")
    assert result["bundle"]["manifest_sha256"]
    assert result["bundle"]["calibration"]["source"] == "PTB-XL fold 9"
    lines = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert len(lines) == 24 and {x["code"] for x in lines} == {"NORM", "CD"}
    assert len((out / "records.csv").read_text().splitlines()) == 25
    for code, f in result["findings"].items():
        mine = [x for x in lines if x["code"] == code]
        assert f["auc"] == pytest.approx(
            roc_auc([x["truth"] for x in mine], [x["p_present"] for x in mine]), abs=1e-4
        )
        tp = sum(x["truth"] and x["said_present"] for x in mine)
        assert f["counts"]["tp"] == tp and f["n"] == len(mine)
        assert f["ablated_auc"] is not None
    page = (out / "report.html").read_text()
    assert page.startswith("<!doctype html>") and page.count("<svg") == 2 * len(result["findings"])
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched: it opens offline
    assert "missing.hea" in page and result["bundle"]["manifest_sha256"] in page
    assert "records/min" in res.output


def test_site_calibration_refuses_rare_findings_and_follows_the_rule() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for k in range(200):  # an overconfident model: p(present) far above the observed frequency
        truth = bool(rng.random() < 0.2)
        p = float(np.clip(rng.normal(0.75 if truth else 0.55, 0.1), 0.01, 0.99))
        rows.append(
            Row(
                record=f"r{k}",
                record_id=f"r{k}",
                sha256="0" * 64,
                code="AFIB",
                finding="atrial fibrillation",
                truth=truth,
                p_present=p,
                said_present=p >= 0.5,
                p_raw=p,
                p_ablated=None,
                measurement=None,
            )
        )
    rows += [
        dataclasses_replace(rows[k], code="WPW", finding="wolf-parkinson-white syndrome", truth=k < 3)
        for k in range(40)
    ]
    fitted, report = fit_site_calibration(rows, {}, min_positives=10)
    assert set(fitted) == {"atrial fibrillation"} and "WPW" in report["refused"]
    assert "3 positives; at least 10" in report["refused"]["WPW"]["why"]
    af = report["findings"]["AFIB"]
    assert af["after"]["ece"] < af["before"]["ece"] / 2  # cross-validated, not on the fitting records
    assert af["after"]["balanced_accuracy"] > af["before"]["balanced_accuracy"]
    assert af["before_ci95"]["ece"][0] is not None
    fitted, _ = fit_site_calibration(rows, {}, rule="sensitivity:0.95", min_positives=10)
    cal = fitted["atrial fibrillation"]
    from diagecg.calibration import platt

    q = platt(np.array([r.p_raw for r in rows if r.code == "AFIB" and r.truth]), cal["a"], cal["b"])
    assert (q >= cal["threshold"]).mean() >= 0.95


def dataclasses_replace(row: Row, **kw: object) -> Row:
    import dataclasses

    return dataclasses.replace(row, **kw)  # type: ignore[arg-type]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_calibrate_writes_a_new_bundle_the_runtime_answers_with(ptbxl_root: Path, tmp_path: Path) -> None:
    rows = _fold10(ptbxl_root, 50)
    labels = _labels_csv(rows, tmp_path / "labels.csv")
    records = [str(_record(ptbxl_root, int(r["ecg_id"]))) for r in rows]
    before = _sha(BUNDLE / "manifest.json")
    new = tmp_path / "site_bundle"
    res = CliRunner().invoke(
        main,
        [
            "calibrate",
            *records[:25],
            "--labels",
            str(labels),
            "--finding",
            "NORM",
            "--finding",
            "SR",
            "--min-positives",
            "3",
            "--folds",
            "3",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--quiet",
            "-o",
            str(new),
        ],
    )
    assert res.exit_code == 0, res.output
    assert _sha(BUNDLE / "manifest.json") == before  # the original bundle is never modified
    bundle = load_bundle(new, verify_hashes=True)
    section = bundle.manifest["calibration"]
    assert section["fitted_on"]["n_records"] == 25 and section["rule"] == "balanced"
    assert set(bundle.calibration) <= {"normal ecg", "sinus rhythm"} and bundle.calibration
    assert "before/after" in res.output
    with DiagEcgPipeline.from_bundle(new, device="cpu", threads=1) as p:
        ans = p.answer(records[30], "Is this a normal ECG?")
        assert ans.calibrated and ans.bundle["calibration"]["source"] == "site labels (labels.csv)"
    # a second run into the same folder is refused; nothing is overwritten
    again = CliRunner().invoke(
        main, ["calibrate", *records[:5], "--labels", str(labels), "-o", str(new), "--quiet"]
    )
    assert again.exit_code == 2 and "not an empty folder" in again.output
    with pytest.raises(InputError, match="inside"):
        write_calibrated_bundle(BUNDLE, BUNDLE / "sub", {"x": {}}, {"rule": "balanced"}, [], "l.csv")


def test_validate_runs_without_torch(ptbxl_root: Path, tmp_path: Path) -> None:
    import os
    import subprocess

    from builders import cli_script_without

    rows = _fold10(ptbxl_root, 4)
    labels = _labels_csv(rows, tmp_path / "labels.csv")
    script = cli_script_without(("torch", "transformers", "peft"), "the runtime must not need it")
    args = [
        "validate",
        *[str(_record(ptbxl_root, int(r["ecg_id"]))) for r in rows],
        "--labels",
        str(labels),
        "--finding",
        "SR",
        "--min-positives",
        "1",
        "--bootstrap",
        "0",
        "--threads",
        "1",
        "--quiet",
        "-o",
        str(tmp_path / "out"),
    ]
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "validation.json").read_text())["records"]["answered"] == 4

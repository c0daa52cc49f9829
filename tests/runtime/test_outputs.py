"""Batch files (-o .jsonl/.csv) and the audit trail (--audit-log): parsed back, under concurrency, rotated."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from diagecg.cli import main
from diagecg.errors import DiagEcgError, InputError
from diagecg.runtime.outputs import AnswerFile, AuditLog, record_sha256
from diagecg.runtime.pipeline import DiagEcgPipeline

QUESTIONS = ["Does this ECG show atrial fibrillation?", "Does this ECG show sinus rhythm?"]


def _opts(bundle: Path) -> list[str]:
    return ["--bundle", str(bundle), "--device", "cpu", "--threads", "1"]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_output_file_holds_one_row_per_record_and_question(
    tiny_bundle: Path, record_paths: list[Path], tmp_path: Path, suffix: str
) -> None:
    out, audit = tmp_path / f"answers{suffix}", tmp_path / "logs" / "audit.jsonl"
    args = [
        "infer",
        str(record_paths[0]),
        str(tmp_path / "gone.hea"),
        str(record_paths[1]),
        *sum((["-q", q] for q in QUESTIONS), []),
        "-o",
        str(out),
        "--audit-log",
        str(audit),
        *_opts(tiny_bundle),
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1  # one record is missing: its lines say why, the others are answered
    assert res.stdout == ""  # everything went to the file
    assert "6 lines written" in res.stderr and "4 answered, 2 failed" in res.stderr
    if suffix == ".csv":
        rows = list(csv.DictReader(out.open()))
        assert [r["question"] for r in rows] == QUESTIONS * 3
        assert [bool(r["error_type"]) for r in rows] == [False, False, True, True, False, False]
        assert all(r["request_id"] and r["created_utc"].endswith("Z") for r in rows)
    else:
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert [r["question"] for r in rows] == QUESTIONS * 3
        assert rows[2]["error_type"] == "RecordNotFoundError"
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    assert len(lines) == 6 and {x["request_id"] for x in lines} == {r["request_id"] for r in rows}
    assert lines[0]["record_sha256"] == record_sha256(record_paths[0]) and lines[0]["client"] == "local"
    assert lines[2]["error_type"] == "RecordNotFoundError" and lines[2]["record_sha256"] == ""
    assert "signal" not in json.dumps(lines)  # never signal data
    again = CliRunner().invoke(main, [*args[:-6], "-o", str(out), *_opts(tiny_bundle)])
    assert again.exit_code == 2 and "exists" in again.stderr  # nothing is overwritten
    with pytest.raises(InputError, match="suffix"):
        AnswerFile(tmp_path / "answers.txt")


def test_audit_lines_never_interleave_and_rotate(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=200_000, backups=3)
    payload = {"question": "x" * 900}

    def worker(k: int) -> None:
        for i in range(100):
            log.write({"worker": k, "i": i, **payload})

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    files = sorted(tmp_path.glob("audit.jsonl*"))
    assert [f.name for f in files] == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"]
    lines = [json.loads(x) for f in files for x in f.read_text().splitlines()]  # every line parses whole
    assert all(f.stat().st_size <= 200_000 for f in files)
    kept = {(x["worker"], x["i"]) for x in lines}
    assert len(kept) == len(lines) and len(lines) >= 3 * 200_000 // 1000  # nothing duplicated


def test_python_api_audits_answers_and_failures(
    tiny_bundle: Path, record_paths: list[Path], tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    with DiagEcgPipeline.from_bundle(tiny_bundle, device="cpu", threads=1, audit_log=audit) as pipe:
        ans = pipe.answer(record_paths[0], QUESTIONS[0])
        with pytest.raises(DiagEcgError):
            pipe.answer(tmp_path / "nothing.hea", QUESTIONS[0])
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    assert lines[0]["request_id"] == ans.request_id and lines[0]["answer"] == ans.answer
    assert lines[0]["manifest_sha256"] == ans.bundle["manifest_sha256"] and lines[0]["latency_ms"] > 0
    assert lines[1]["error"] and lines[1]["request_id"] != ans.request_id

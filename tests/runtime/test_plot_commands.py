"""``diagecg plot`` (no model, no torch, no runtime), and ``--plot`` of ``diagecg infer`` and ``report``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from builders import cli_script_without, write_record
from click.testing import CliRunner

from diagecg.cli import main
from diagecg.cli_options import ExitCode
from diagecg.io import read_record

pytest.importorskip("matplotlib")

QUESTION = "Is the rhythm regular?"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# `diagecg plot` with torch & co. and the runtime's engines unimportable (an import hook,
# builders.cli_script_without): only the core and matplotlib are left
BLOCKED = ("torch", "transformers", "peft", "onnxruntime", "llama_cpp", "tokenizers")
CORE_ONLY_CLI = cli_script_without(BLOCKED, "diagecg plot must not need it")


def _opts(bundle: Path) -> list[str]:
    return ["--bundle", str(bundle), "--device", "cpu", "--threads", "1"]


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every ``plot_ecg`` call of ``--plot``: its record, path and keywords (drawn at a low DPI: quick)."""
    import diagecg.runtime.plots as plots

    calls: list[dict[str, Any]] = []
    real = plots.plot_ecg

    def spy(record: Any, out: Path, **kwargs: Any) -> Path:
        calls.append({"record": record, "out": Path(out), **kwargs})
        return real(record, out, **{**kwargs, "dpi": 40})

    monkeypatch.setattr(plots, "plot_ecg", spy)
    return calls


# --- diagecg plot ---------------------------------------------------------------------------------------


def test_plot_command_needs_neither_torch_nor_the_runtime(record_paths: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "ecg.png"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CORE_ONLY_CLI,
            "plot",
            str(record_paths[3]),
            "-o",
            str(out),
            "--dpi",
            "50",
            "--age",
            "63",
            "--text",
            "a note",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out) and out.read_bytes()[:8] == PNG_MAGIC
    # without -o: <record id>.png in the current folder
    default = subprocess.run(
        [sys.executable, "-c", CORE_ONLY_CLI, "plot", str(record_paths[0]), "--dpi", "50"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert default.returncode == 0, default.stderr
    assert (tmp_path / "00002_lr.png").read_bytes()[:8] == PNG_MAGIC


def test_plot_command_errors_are_one_line_with_the_exit_codes(
    record_paths: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = str(record_paths[0])
    cases = [  # (arguments, exit code, what the line says)
        ([str(tmp_path / "nope.hea"), "-o", str(tmp_path / "a.png")], ExitCode.FAILED, "not found"),
        ([record, "-o", str(tmp_path / "missing" / "a.png")], ExitCode.USAGE, "missing does not exist"),
        ([record, "-o", str(tmp_path / "a.jpg")], ExitCode.USAGE, "must end in one of .png, .pdf, .svg"),
        ([record, "-o", str(tmp_path / "a.png"), "--start", "30"], ExitCode.USAGE, "outside the 10.00 s"),
    ]
    for args, code, says in cases:
        result = CliRunner().invoke(main, ["plot", *args])
        assert result.exit_code == code, (args, result.output)
        assert says in _one_error_line(result.stderr) and result.stdout == ""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # not installed
    result = CliRunner().invoke(main, ["plot", record, "-o", str(tmp_path / "a.png")])
    assert result.exit_code == ExitCode.USAGE
    assert _one_error_line(result.stderr) == "error: plotting needs matplotlib: pip install 'diagecg[plot]'"
    assert list(tmp_path.iterdir()) == []


# --- --plot of infer and report --------------------------------------------------------------------------


def test_infer_plot_draws_the_record_with_its_answer_and_window(
    tiny_bundle: Path, record_paths: list[Path], tmp_path: Path, drawn: list[dict[str, Any]]
) -> None:
    out = tmp_path / "ecg.png"
    result = CliRunner().invoke(
        main,
        [
            "infer",
            str(record_paths[0]),
            "-q",
            QUESTION,
            "--plot",
            str(out),
            "--age",
            "63",
            *_opts(tiny_bundle),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG_MAGIC
    (call,) = drawn
    answer = result.stdout.strip()
    assert call["out"] == out and call["record"].record_id == "00002_lr"
    # a free question (no catalogue) has no confidence: that is a closed question's answer probability
    assert call["text"] == f"Question: {QUESTION}\nAnswer: {answer}"
    assert call["windows"] == [(0.0, 10.0)]
    assert call["highpass_hz"] == 0.5 and call["lowpass_hz"] is None  # the tiny bundle's preprocessing
    assert call["patient"].age_years == 63  # what the prompt was given


def test_several_records_are_drawn_into_a_folder_one_picture_each(
    tiny_bundle: Path, record_paths: list[Path], tmp_path: Path, drawn: list[dict[str, Any]]
) -> None:
    folder = tmp_path / "plots"  # created: its parent exists
    questions = [QUESTION, "Does this ECG show sinus rhythm?"]
    result = CliRunner().invoke(
        main,
        [
            "infer",
            str(record_paths[0]),
            str(tmp_path / "gone.hea"),
            str(record_paths[1]),
            "-q",
            questions[0],
            "-q",
            questions[1],
            "--plot",
            str(folder),
            *_opts(tiny_bundle),
        ],
    )
    assert result.exit_code == ExitCode.FAILED  # gone.hea; the others are answered and drawn
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(p.name for p in folder.iterdir()) == ["00002_lr.png", "00003_lr.png"]
    assert [c["out"].name for c in drawn] == ["00002_lr.png", "00003_lr.png"]
    for call, (a, b) in zip(drawn, [(lines[0], lines[1]), (lines[4], lines[5])], strict=True):
        # one picture per record, with every question it was asked and its answer
        assert call["text"].splitlines()[0::2] == [f"Question: {q}" for q in questions]
        assert [line.split("  (")[0] for line in call["text"].splitlines()[1::2]] == [
            f"Answer: {a['answer']}",
            f"Answer: {b['answer']}",
        ]
    pattern = str(tmp_path / "{record_id}.svg")  # the record's id in the file name
    report = CliRunner().invoke(
        main, ["report", str(record_paths[0]), "--plot", pattern, *_opts(tiny_bundle)]
    )
    assert report.exit_code == 0, report.output
    assert drawn[-1]["text"].startswith(f"Report: {report.stdout.splitlines()[0]}")
    assert (tmp_path / "00002_lr.svg").is_file()


def test_records_sharing_an_id_are_drawn_apart_and_the_command_says_so(
    tiny_bundle: Path, record_paths: list[Path], tmp_path: Path, drawn: list[dict[str, Any]]
) -> None:
    twin = tmp_path / "copy"
    twin.mkdir()
    for f in record_paths[0].parent.glob(record_paths[0].stem + ".*"):
        (twin / f.name).write_bytes(f.read_bytes())  # another record with the same id
    folder = tmp_path / "plots"
    result = CliRunner().invoke(
        main,
        [
            "infer",
            str(record_paths[0]),
            str(twin / record_paths[0].name),
            "-q",
            QUESTION,
            "--plot",
            str(folder),
            *_opts(tiny_bundle),
        ],
    )
    assert result.exit_code == 0, result.output
    first, second = (json.loads(line)["plot"] for line in result.stdout.splitlines())
    assert Path(first).name == "00002_lr.png" and Path(second).name == "00002_lr-2.png"
    assert "note: --plot: 00002_lr names several records; also drawn as 00002_lr-2.png" in result.stderr


def test_report_plot_of_a_long_record_marks_the_windows_its_answer_used(
    tiny_bundle: Path, record_paths: list[Path], tmp_path: Path, drawn: list[dict[str, Any]]
) -> None:
    # three different real 100 Hz records, 10 s each, one after another: 30 s (one record tiled three
    # times is refused now: a segment that repeats is not a recording)
    recs = [read_record(p) for p in record_paths[:3]]
    assert {r.fs_hz for r in recs} == {100.0}
    long = write_record(tmp_path, "long", np.concatenate([r.signal for r in recs], axis=1), 100.0)  # 30 s
    result = CliRunner().invoke(
        main, ["report", str(long), "--json", "--plot", str(tmp_path / "long.png"), *_opts(tiny_bundle)]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    (call,) = drawn
    assert call["windows"] == [(w["start_s"], w["end_s"]) for w in answer["windows"]]
    assert call["windows"] == [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]
    assert "per window: 0.0\u201310.0 s: " in call["text"]
    assert (tmp_path / "long.png").read_bytes()[:8] == PNG_MAGIC


def test_a_plot_path_that_cannot_be_written_fails_before_anything_is_answered(
    tiny_bundle: Path, record_paths: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = str(record_paths[0])
    for plot, says in [
        (tmp_path / "missing" / "ecg.png", "missing does not exist"),
        (tmp_path / "ecg.txt", "must end in one of"),
        (tmp_path / "missing" / "plots", "its parent"),
    ]:
        records = [record] if plot.suffix else [record, record]
        result = CliRunner().invoke(main, ["report", *records, "--plot", str(plot), *_opts(tiny_bundle)])
        assert result.exit_code == ExitCode.USAGE and result.stdout == "", result.output
        assert says in _one_error_line(result.stderr)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = CliRunner().invoke(
        main, ["infer", record, "-q", QUESTION, "--plot", str(tmp_path / "ecg.png"), *_opts(tiny_bundle)]
    )
    assert result.exit_code == ExitCode.USAGE and result.stdout == ""
    assert _one_error_line(result.stderr) == "error: plotting needs matplotlib: pip install 'diagecg[plot]'"

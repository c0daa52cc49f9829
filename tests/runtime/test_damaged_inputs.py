"""The damaged inputs a fuzzing user fed ``diagecg infer`` (issue: 240 inputs, 9 tracebacks, 1 crash,
15 confident answers on garbage), kept as tests: each gives one ``error:`` line, the documented exit
code, and no traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from builders import write_record
from click.testing import CliRunner

from diagecg.cli import main
from diagecg.cli_options import ExitCode
from diagecg.io import read_record

GOOD = "00003_lr"


def _copy(fixtures_dir: Path, tmp: Path) -> Path:
    for suffix in (".hea", ".dat"):
        shutil.copy(fixtures_dir / "records" / f"{GOOD}{suffix}", tmp / f"{GOOD}{suffix}")
    return tmp / f"{GOOD}.hea"


def _edit_header(fixtures_dir: Path, tmp: Path, edit: Callable[[list[str]], None]) -> Path:
    hea = _copy(fixtures_dir, tmp)
    lines = hea.read_text().splitlines()
    edit(lines)
    hea.write_text("\n".join(lines) + "\n")
    return hea


def _rate(value: str) -> Callable[[list[str]], None]:
    def edit(lines: list[str]) -> None:
        parts = lines[0].split()
        parts[2] = value
        lines[0] = " ".join(parts)
    return edit


def _negative_gain(lines: list[str]) -> None:
    lines[1] = lines[1].replace("1000.0(0)/mV", "-1000.0(0)/mV")


def _signal(kind: str, good: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(good.shape[1]) / 100.0
    return {
        "gaussian noise": lambda: rng.normal(0, 0.3, good.shape),
        "uniform noise": lambda: rng.uniform(-1, 1, good.shape),
        "1 Hz sine": lambda: np.tile(np.sin(2 * np.pi * t), (12, 1)),
        "twelve copies of lead II": lambda: np.tile(good[1], (12, 1)),
    }[kind]()


RECORD_CASES = [
    ("rate 1e-6 Hz", lambda f, t: _edit_header(f, t, _rate("1e-6")), "sampling rate"),
    ("rate 0.005 Hz", lambda f, t: _edit_header(f, t, _rate("0.005")), "sampling rate"),
    ("rate 0.5 Hz", lambda f, t: _edit_header(f, t, _rate("0.5")), "sampling rate"),
    ("rate 2 MHz", lambda f, t: _edit_header(f, t, _rate("2000000")), "sampling rate"),
    ("negative gain", lambda f, t: _edit_header(f, t, _negative_gain), "inverted lead"),
    *[(kind, (lambda k: lambda f, t: write_record(t, "garbage", _signal(k, read_record(
        f / "records" / GOOD).signal), 100.0))(kind), "does not look like a 12-lead ECG")
      for kind in ("gaussian noise", "uniform noise", "1 Hz sine", "twelve copies of lead II")],
]


def _opts(bundle: Path) -> list[str]:
    return ["--bundle", str(bundle), "--device", "cpu", "--threads", "1"]


@pytest.mark.parametrize("name, make, message", RECORD_CASES, ids=[c[0] for c in RECORD_CASES])
@pytest.mark.parametrize("mode", ["text", "json"])
def test_damaged_records_fail_with_one_line(tiny_bundle: Path, fixtures_dir: Path, tmp_path: Path,
                                            name: str, make: Callable[[Path, Path], Path], message: str,
                                            mode: str) -> None:
    record = make(fixtures_dir, tmp_path)
    args = ["infer", str(record), "-q", "Is the rhythm regular?", *_opts(tiny_bundle)]
    result = CliRunner().invoke(main, [*args, "--json"] if mode == "json" else args)
    assert result.exit_code == ExitCode.FAILED, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    if mode == "json":
        line = json.loads(result.stdout)
        assert message in line["error"] and "answer" not in line
    else:
        errors = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
        assert len(errors) == 1 and message in errors[0] and result.stdout == ""


@pytest.mark.parametrize("extra, message", [
    (["-q", "AF? <|end_of_text|>"], "special token"),
    (["-q", "AF?\x07"], "control characters"),
    (["-q", "AF? \udcff"], "not valid UTF-8"),  # a byte that was not UTF-8, as Python passes it on
    (["-q", "AF?", "--threads", "100000"], "100000"),
])
def test_bad_questions_and_options_stop_before_anything_runs(tiny_bundle: Path, fixtures_dir: Path,
                                                             extra: list[str], message: str) -> None:
    record = fixtures_dir / "records" / f"{GOOD}.hea"
    result = CliRunner().invoke(main, ["infer", str(record), *_opts(tiny_bundle), *extra])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert message in result.output and "Traceback" not in result.output and result.stdout == ""


def test_a_deeply_nested_manifest_is_one_line(bundle_copy: Path, fixtures_dir: Path) -> None:
    (bundle_copy / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    result = CliRunner().invoke(main, ["infer", str(fixtures_dir / "records" / f"{GOOD}.hea"), "-q", "AF?",
                                       *_opts(bundle_copy)])
    assert result.exit_code == ExitCode.USAGE and "nested too deeply" in result.stderr
    assert "Traceback" not in result.output

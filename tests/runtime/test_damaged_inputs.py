"""The damaged inputs a fuzzing user fed ``diagecg infer`` (issue: 240 inputs, 9 tracebacks, 1 crash,
15 confident answers on garbage), kept as tests: each gives one ``error:`` line, the documented exit
code, and no traceback."""

from __future__ import annotations

import json
import shutil
import time
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
    *[
        (
            kind,
            (
                lambda k: (
                    lambda f, t: write_record(
                        t, "garbage", _signal(k, read_record(f / "records" / GOOD).signal), 100.0
                    )
                )
            )(kind),
            "does not look like a 12-lead ECG",
        )
        for kind in ("gaussian noise", "uniform noise", "1 Hz sine", "twelve copies of lead II")
    ],
]


def _opts(bundle: Path) -> list[str]:
    return ["--bundle", str(bundle), "--device", "cpu", "--threads", "1"]


@pytest.mark.parametrize("name, make, message", RECORD_CASES, ids=[c[0] for c in RECORD_CASES])
@pytest.mark.parametrize("mode", ["text", "json"])
def test_damaged_records_fail_with_one_line(
    tiny_bundle: Path,
    fixtures_dir: Path,
    tmp_path: Path,
    name: str,
    make: Callable[[Path, Path], Path],
    message: str,
    mode: str,
) -> None:
    record = make(fixtures_dir, tmp_path)
    args = ["infer", str(record), "-q", "Is the rhythm regular?", *_opts(tiny_bundle)]
    result = CliRunner().invoke(main, [*args, "--json"] if mode == "json" else args)
    assert result.exit_code == ExitCode.FAILED, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    if mode == "json":
        line = json.loads(result.stdout)
        assert message in line["error"] and line["answer"] == "" and line["confidence"] is None
    else:
        errors = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
        assert len(errors) == 1 and message in errors[0] and result.stdout == ""


@pytest.mark.parametrize(
    "extra, message",
    [
        (["-q", "AF? <|end_of_text|>"], "special token"),
        (["-q", "AF?\x07"], "control characters"),
        (["-q", "AF? \udcff"], "not valid UTF-8"),  # a byte that was not UTF-8, as Python passes it on
        (["-q", "AF?", "--threads", "100000"], "100000"),
    ],
)
def test_bad_questions_and_options_stop_before_anything_runs(
    tiny_bundle: Path, fixtures_dir: Path, extra: list[str], message: str
) -> None:
    record = fixtures_dir / "records" / f"{GOOD}.hea"
    result = CliRunner().invoke(main, ["infer", str(record), *_opts(tiny_bundle), *extra])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert message in result.output and "Traceback" not in result.output and result.stdout == ""


def test_a_deeply_nested_manifest_is_one_line(bundle_copy: Path, fixtures_dir: Path) -> None:
    (bundle_copy / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    result = CliRunner().invoke(
        main, ["infer", str(fixtures_dir / "records" / f"{GOOD}.hea"), "-q", "AF?", *_opts(bundle_copy)]
    )
    assert result.exit_code == ExitCode.USAGE and "nested too deeply" in result.stderr
    assert "Traceback" not in result.output


# --- issue 23: the tracebacks of the second round, each one line with its exit code --------------------


def _nul_file_name(lines: list[str]) -> None:
    lines[1] = lines[1].replace(f"{GOOD}.dat", f"{GOOD[:3]}\x00{GOOD[3:]}.dat", 1)


def _edf_signals(value: str) -> Callable[[Path, Path], Path]:
    def make(fixtures_dir: Path, tmp: Path) -> Path:
        data = bytearray((fixtures_dir / "formats" / "edf" / "short_psg.edf").read_bytes())
        data[252:256] = value.ljust(4).encode()  # the fixed header's "number of signals" field
        (tmp / "bad.edf").write_bytes(bytes(data))
        return tmp / "bad.edf"

    return make


def _gain(value: str) -> Callable[[list[str]], None]:
    def edit(lines: list[str]) -> None:
        lines[1:] = [ln.replace("1000.0(0)/mV", f"{value}(0)/mV") for ln in lines[1:]]

    return edit


SECOND_ROUND = [
    ("NUL byte in a signal file name", lambda f, t: _edit_header(f, t, _nul_file_name), "NUL byte"),
    ("EDF with 1e99 signals", _edf_signals("1e99"), "signals, whose headers alone need"),
    ("EDF with 1e9 signals", _edf_signals("1e9"), "signals, whose headers alone need"),
    ("gain 1e-300", lambda f, t: _edit_header(f, t, _gain("1e-300")), "beyond float32"),
]


@pytest.mark.parametrize("name, make, message", SECOND_ROUND, ids=[c[0] for c in SECOND_ROUND])
def test_second_round_records_fail_with_one_line_and_no_numpy_warning(
    tiny_bundle: Path,
    fixtures_dir: Path,
    tmp_path: Path,
    name: str,
    make: Callable[[Path, Path], Path],
    message: str,
) -> None:
    import warnings

    record = make(fixtures_dir, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, ["infer", str(record), "-q", "AF?", *_opts(tiny_bundle)])
    assert result.exit_code == ExitCode.FAILED, result.output
    errors = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.output
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]


@pytest.mark.parametrize(
    "args, message",
    [
        (["infer", "", "-q", "AF?"], "an empty RECORD argument"),
        (["infer", f"{GOOD}.hea", "-q", "AF?", "--age", "nan"], "'nan' is not a finite number"),
        (["infer", f"{GOOD}.hea", "-q", "AF?", "--height-cm", "nan"], "'nan' is not a finite number"),
        (["report", f"{GOOD}.hea", "--weight-kg", "-nan"], "not a finite number"),
    ],
)
def test_second_round_options_are_usage_errors(
    tiny_bundle: Path,
    fixtures_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    _copy(fixtures_dir, tmp_path)
    (tmp_path / "sub").mkdir()  # '' must not scan the current folder (which holds a record)
    _copy(fixtures_dir, tmp_path / "sub")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [*args, *_opts(tiny_bundle)])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert message in result.output and "Traceback" not in result.output and result.stdout == ""


@pytest.mark.parametrize(
    "extra, message",
    [
        (["-o", "a" * 300 + ".png"], "bytes long; a file system takes at most 255"),
        (["--highpass", "1e-9"], "below 0.05 Hz"),
    ],
)
def test_plot_options_that_crashed_are_usage_errors(
    fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], message: str
) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    t = time.perf_counter()
    result = CliRunner().invoke(main, ["plot", str(fixtures_dir / "records" / f"{GOOD}.hea"), *extra])
    assert time.perf_counter() - t < 30  # a 1e-9 Hz high-pass asked for 3.4 TiB of FFT buffers
    assert result.exit_code == ExitCode.USAGE, result.output
    errors = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.output


def test_a_filter_that_rings_for_ever_is_refused_before_allocating() -> None:
    from diagecg.dsp import butter_filtfilt

    with pytest.raises(ValueError, match="too low for this sampling rate"):
        butter_filtfilt(np.zeros((12, 1000)), 2, 1e-9, "highpass", 500.0)


def test_pipeline_api_edges(pipeline, fixtures_dir: Path) -> None:
    from diagecg.constants import CANONICAL_LEADS
    from diagecg.errors import InputError, SignalQualityError
    from diagecg.types import EcgRecord

    record = fixtures_dir / "records" / f"{GOOD}.hea"
    for options, message in (
        ([], "no answer options"),
        ("yes", "no answer options"),
        ([""], "it is empty"),
        (["yes", "<|end_of_text|>"], "special token"),
        (["yes", 1], "must be a str"),
    ):
        with pytest.raises(InputError, match=message):
            pipeline.option_probabilities(record, "AF?", options)
    good = read_record(record).signal
    noise = np.random.default_rng(0).normal(0, 0.3, good.shape).astype(np.float32)
    for signal, message in (
        (noise, "does not look like a 12-lead ECG"),
        (good * 1e6, "implausible amplitude"),
    ):
        hand = EcgRecord(signal=signal, fs_hz=100.0, lead_names=CANONICAL_LEADS)
        with pytest.raises(SignalQualityError, match=message):
            pipeline.answer(hand, "AF?")
        [line] = list(pipeline.answer_batch([hand], "AF?"))
        assert isinstance(line, dict) and message in line["error"]


# --- issue 23: what only looks like an ECG ------------------------------------------------------------


def _reversed_arms(x: np.ndarray) -> np.ndarray:
    y = x.copy()
    y[0] = -x[0]  # I -> -I, II <-> III, aVR <-> aVL
    y[[1, 2]] = x[[2, 1]]
    y[[3, 4]] = x[[4, 3]]
    return y


def test_implausible_records_are_refused_or_answered_with_coded_warnings(
    catalogue_bundle: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    good = read_record(fixtures_dir / "records" / "00002_hr.hea")
    swapped = write_record(tmp_path, "swapped", _reversed_arms(good.signal), 500.0)
    args = ["-q", "AF?", "--json", *_opts(catalogue_bundle)]
    result = CliRunner().invoke(main, ["infer", str(swapped), *args])
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout)
    assert "LIMB_LEADS_REVERSED" in {w["code"] for w in line["warnings"]}
    assert line["reliability"]["status"] == "implausible_record"
    tiled = write_record(tmp_path, "tiled", np.tile(good.signal[:, :500], (1, 10)), 500.0)
    result = CliRunner().invoke(main, ["infer", str(tiled), *args])
    assert result.exit_code == ExitCode.FAILED and "(SIGNAL_REPEATS)" in json.loads(result.stdout)["error"]


def test_allow_degraded_with_only_lead_ii_alive_gives_no_answer(
    catalogue_bundle: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    good = read_record(fixtures_dir / "records" / "00002_hr.hea").signal
    only_ii = np.zeros_like(good)
    only_ii[1] = good[1]
    record = write_record(tmp_path, "only_ii", only_ii, 500.0)
    result = CliRunner().invoke(
        main, ["infer", str(record), "-q", "AF?", "--allow-degraded", *_opts(catalogue_bundle)]
    )
    assert result.exit_code == ExitCode.FAILED and result.stdout == ""
    assert "flat limb lead" in result.stderr and "not even with --allow-degraded" in result.stderr

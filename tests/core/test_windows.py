"""Windows of a long record: they cover it, and none is a near-copy of another (diagecg.preprocess)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from diagecg.config import PreprocessConfig
from diagecg.io import read_record
from diagecg.preprocess import record_windows

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.parametrize(
    ("seconds", "spans"),
    [
        (10.2, [(0.0, 10.2)]),  # within the slack: the record itself
        (10.5, [(0.0, 10.5)]),
        (10.6, [(0.0, 10.0)]),  # two windows would be 0.6 s apart: the first window only
        (12.0, [(0.0, 10.0)]),
        (14.9, [(0.0, 10.0)]),
        (15.0, [(0.0, 10.0), (5.0, 15.0)]),
        (20.5, [(0.0, 10.0), (5.25, 15.25), (10.5, 20.5)]),
        (30.0, [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]),
        (38.4, [(0.0, 10.0), (9.47, 19.47), (18.93, 28.93), (28.4, 38.4)]),
    ],
)
def test_windows_start_half_a_window_apart_and_cover_long_records(
    seconds: float, spans: list[tuple[float, float]]
) -> None:
    rec = read_record(FIXTURES / "records" / "00002_lr.hea")
    reps = int(np.ceil(seconds / 10))
    signal = np.tile(rec.signal, (1, reps))[:, : round(seconds * rec.fs_hz)]
    windows = record_windows(dataclasses.replace(rec, signal=signal), PreprocessConfig(fs_hz=100))
    assert [(a, b) for a, b, _ in windows] == spans
    starts = [a for a, _, _ in windows]
    assert all(b - a >= 5.0 for a, b in zip(starts, starts[1:], strict=False))
    if seconds >= 15.0:  # every sample in at least one window
        assert windows[-1][1] == pytest.approx(seconds)


def test_the_philips_fixture_is_one_window() -> None:
    pytest.importorskip("sierraecg")
    rec = read_record(FIXTURES / "formats" / "philips" / "129DYPRG.XML")
    assert 10.0 < rec.duration_s < 11.0
    assert [(a, b) for a, b, _ in record_windows(rec, PreprocessConfig())] == [(0.0, 10.0)]

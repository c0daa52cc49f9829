"""check_signal on a real record and on controlled damage to it; thresholds come from QualityConfig."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diagecg.config import QualityConfig
from diagecg.constants import CANONICAL_LEADS
from diagecg.errors import SignalQualityError
from diagecg.io import read_record
from diagecg.quality import check_signal, flat_leads


@pytest.fixture(scope="module")
def mv() -> np.ndarray:
    rec = read_record(Path(__file__).resolve().parents[1] / "fixtures" / "records" / "00003_lr")
    return rec.signal.astype(np.float64)  # (12, 1000) mV, 100 Hz


def test_real_record_passes(mv: np.ndarray) -> None:
    assert check_signal(mv, 100.0, CANONICAL_LEADS, "rec") == []


def test_dc_offset_alone_is_not_implausible(mv: np.ndarray) -> None:
    assert check_signal(mv + 50.0, 100.0, CANONICAL_LEADS, "rec") == []  # 50 mV offset, normal ECG on top


def test_partial_clipping_warns(mv: np.ndarray) -> None:
    x = mv.copy()
    hi = np.quantile(x[9], 0.95)
    x[9] = np.minimum(x[9], hi)  # 5% of V4 at its max
    warnings = check_signal(x, 100.0, CANONICAL_LEADS, "rec")
    assert len(warnings) == 1 and "V4" in warnings[0] and "clipping" in warnings[0]
    with pytest.raises(SignalQualityError, match="saturated.*V4"):
        cfg = QualityConfig(rail_fraction=0.04, rail_warn_fraction=0.02)
        check_signal(x, 100.0, CANONICAL_LEADS, "rec", cfg)


def test_thresholds_come_from_config(mv: np.ndarray) -> None:
    with pytest.raises(SignalQualityError, match="implausible amplitude"):
        check_signal(mv, 100.0, CANONICAL_LEADS, "rec", QualityConfig(max_abs_mv=0.5))
    with pytest.raises(SignalQualityError, match="too short: 10.000 s"):
        check_signal(mv, 100.0, CANONICAL_LEADS, "rec", QualityConfig(min_duration_s=11))
    std = mv.std(axis=1)
    between = float((np.sort(std)[0] + np.sort(std)[1]) / 2)  # flags exactly the quietest lead
    with pytest.raises(SignalQualityError, match=f"flat lead\\(s\\) {CANONICAL_LEADS[int(np.argmin(std))]} "):
        check_signal(mv, 100.0, CANONICAL_LEADS, "rec", QualityConfig(flat_std_mv=between))


def test_inf_and_shape_errors_name_the_source(mv: np.ndarray) -> None:
    x = mv.copy()
    x[0, 3] = np.inf
    with pytest.raises(SignalQualityError, match="^my.hea: NaN/inf.*I: 1"):
        check_signal(x, 100.0, CANONICAL_LEADS, "my.hea")
    with pytest.raises(SignalQualityError, match="does not match 11 leads"):
        check_signal(mv, 100.0, CANONICAL_LEADS[:11], "my.hea")


def test_degraded_mode_reads_flat_precordial_leads_with_a_warning(mv: np.ndarray) -> None:
    x = mv.copy()
    x[6:9] = 0.0  # V1-V3 disconnected
    with pytest.raises(SignalQualityError, match="flat lead.*V1, V2, V3.*--allow-degraded"):
        check_signal(x, 100.0, CANONICAL_LEADS, "rec")
    (warning,) = check_signal(x, 100.0, CANONICAL_LEADS, "rec", QualityConfig(allow_flat_leads=True))
    assert "V1, V2, V3" in warning and "rhythm questions can still be trusted" in warning
    assert flat_leads(x).tolist() == [False] * 6 + [True] * 3 + [False] * 3
    x[1] = 0.0  # lead II too: nothing can be trusted, so nothing is answered (issue 23)
    with pytest.raises(SignalQualityError, match="flat limb lead.*II.*not even with --allow-degraded"):
        check_signal(x, 100.0, CANONICAL_LEADS, "rec", QualityConfig(allow_flat_leads=True))
    only_ii = np.zeros_like(mv)
    only_ii[1] = mv[1]  # only lead II alive, the case of the issue: refused, not answered with a warning
    with pytest.raises(SignalQualityError, match="flat limb lead.*not even with --allow-degraded"):
        check_signal(only_ii, 100.0, CANONICAL_LEADS, "rec", QualityConfig(allow_flat_leads=True))
    with pytest.raises(SignalQualityError, match="every lead is flat"):  # still refused
        check_signal(np.zeros_like(mv), 100.0, CANONICAL_LEADS, "rec", QualityConfig(allow_flat_leads=True))


# --- "is this an ECG": each kind of garbage a fuzzing user fed the CLI is refused ---------------------


def _derived(lead_i: np.ndarray, lead_ii: np.ndarray, precordial: np.ndarray) -> np.ndarray:
    lead_iii = lead_ii - lead_i
    return np.vstack(
        [
            lead_i,
            lead_ii,
            lead_iii,
            -(lead_i + lead_ii) / 2,
            (lead_i - lead_iii) / 2,
            (lead_ii + lead_iii) / 2,
            precordial,
        ]
    )


def _garbage(name: str, mv: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    n = mv.shape[1]
    t = np.arange(n) / 100.0
    sine = np.sin(2 * np.pi * t)
    if name == "gaussian noise":
        return rng.normal(0, 0.3, (12, n))
    if name == "uniform noise":
        return rng.uniform(-1, 1, (12, n))
    if name == "1 Hz sine on every lead":
        return np.tile(sine, (12, 1))
    if name == "1 Hz sines with consistent limb leads":
        return _derived(sine, 1.3 * sine, np.vstack([np.sin(2 * np.pi * t + k) for k in range(6)]))
    if name == "noise with consistent limb leads":
        return _derived(rng.normal(0, 0.3, n), rng.normal(0, 0.3, n), rng.normal(0, 0.3, (6, n)))
    if name == "twelve copies of lead II":
        return np.tile(mv[1], (12, 1))
    if name == "six copies of V1":
        return np.vstack([mv[:6], np.tile(mv[6], (6, 1))])
    if name == "lead I inverted":
        return mv * np.array([-1.0] + [1.0] * 11)[:, None]
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name, reason",
    [
        ("gaussian noise", "no QRS complexes"),
        ("uniform noise", "no QRS complexes"),
        ("1 Hz sine on every lead", "break the relations"),
        ("1 Hz sines with consistent limb leads", "no QRS complexes"),
        ("noise with consistent limb leads", "no QRS complexes"),
        ("twelve copies of lead II", "break the relations"),
        ("six copies of V1", "copies of one signal"),
        ("lead I inverted", "break the relations"),
    ],
)
def test_signals_that_are_not_an_ecg_are_refused(mv: np.ndarray, name: str, reason: str) -> None:
    x = _garbage(name, mv)
    with pytest.raises(SignalQualityError, match=f"does not look like a 12-lead ECG: .*{reason}"):
        check_signal(x, 100.0, CANONICAL_LEADS, "rec")
    assert check_signal(x, 100.0, CANONICAL_LEADS, "rec", QualityConfig(require_ecg=False)) == []


def test_every_real_fixture_record_looks_like_an_ecg() -> None:
    from diagecg.quality import ecg_problems

    folder = Path(__file__).resolve().parents[1] / "fixtures" / "records"
    for hea in sorted(folder.glob("*.hea")):
        rec = read_record(hea)
        assert ecg_problems(rec.signal, rec.fs_hz) == [], hea.name


def test_a_long_record_with_one_bad_stretch_warns_and_mostly_bad_is_refused(mv: np.ndarray) -> None:
    good = np.tile(mv, 8)  # 80 s: checked on 6 evenly spaced 10 s windows
    bad = good.copy()
    bad[:, :1000] = np.random.default_rng(1).normal(0, 0.3, (12, 1000))  # the first window is noise
    warnings = check_signal(bad, 100.0, CANONICAL_LEADS, "rec")
    assert len(warnings) == 1 and "1 of 6 checked 10 s windows" in warnings[0]
    noise = np.random.default_rng(2).normal(0, 0.3, good.shape)
    noise[:, :1000] = mv
    with pytest.raises(SignalQualityError, match="does not look like"):
        check_signal(noise, 100.0, CANONICAL_LEADS, "rec")


def test_flat_leads_are_left_out_of_the_ecg_checks(mv: np.ndarray) -> None:
    x = mv.copy()
    x[6:8] = 0.0  # V1, V2 disconnected: identical (both zero), but flat, so not "copies"
    warnings = check_signal(x, 100.0, CANONICAL_LEADS, "rec", QualityConfig(allow_flat_leads=True))
    assert len(warnings) == 1 and "degraded record" in warnings[0]

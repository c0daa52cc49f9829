"""diagecg.features: rate, rhythm and QRS duration of synthetic ECGs with known answers, the no-beat
defaults, clipping and units, and on real PTB-XL records determinism and the AFIB/SR rhythm contrast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diagecg.config import PRESETS
from diagecg.constants import CANONICAL_LEADS
from diagecg.features import (
    BEAT_WINDOW_S,
    FEATURE_NAMES,
    LEAD_FEATURES,
    REPORT_MEASUREMENTS,
    measure,
    measure_features,
    summary_line,
)
from diagecg.io import read_record
from diagecg.preprocess import prepare_signal

SECONDS = 10.0
# per-lead gain of the synthetic beat (mV per unit): mixed polarities, like a frontal axis near +40 deg
GAINS = np.array([1.0, 1.2, 0.3, -1.0, 0.4, 0.8, -0.5, 0.6, 1.0, 1.4, 1.3, 1.1])
RHYTHM_DEFAULTS = {
    "heart_rate_bpm": 0.0,
    "n_beats": 0.0,
    "rr_cv": 0.0,
    "rr_rmssd_rel": 0.0,
    "rr_pnn50": 0.0,
    "rr_pdiff12": 0.0,
    "rr_min_rel": 1.0,
    "rr_max_rel": 1.0,
}


def _named(m) -> dict[str, float]:
    return {n: float(v) for n, v in zip(FEATURE_NAMES, m.features, strict=True)}


def _gauss(t: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - centre) / sigma) ** 2)


def synthetic_ecg(
    fs_hz: float,
    beats_s: np.ndarray | list[float],
    qrs_scale: float = 1.0,
    noise_mv: float = 0.0,
    seed: int = 0,
    waves: bool = True,
) -> np.ndarray:
    """(12, SECONDS * fs_hz) mV: a q-R-s complex at each beat time (about 80 ms wide, times
    ``qrs_scale``), a P wave 160 ms before it and a T wave 300 ms after it, scaled per lead by GAINS."""
    t = np.arange(int(round(fs_hz * SECONDS))) / fs_hz
    x = np.zeros_like(t)
    w = qrs_scale
    for b in beats_s:
        x += -0.1 * _gauss(t, b - 0.025 * w, 0.008 * w) + 1.0 * _gauss(t, b, 0.010 * w)
        x += -0.25 * _gauss(t, b + 0.025 * w, 0.008 * w)
        if waves:
            x += 0.15 * _gauss(t, b - 0.16, 0.025) + 0.3 * _gauss(t, b + 0.30, 0.045)
    sig = GAINS[:, None] * x
    if noise_mv:
        sig = sig + np.random.default_rng(seed).normal(scale=noise_mv, size=sig.shape)
    return sig


def regular_beats(bpm: float, first_s: float = 0.5) -> np.ndarray:
    return np.arange(first_s, SECONDS - 0.3, 60.0 / bpm)


def _feature_dict(x: np.ndarray, fs_hz: float) -> dict[str, float]:
    return _named(measure(x, fs_hz))


# --- layout -------------------------------------------------------------------------------------


def test_feature_names_are_rhythm_intervals_criteria_then_lead_amplitudes() -> None:
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES)) == 8 + 7 + 4 + len(LEAD_FEATURES) * 12
    assert FEATURE_NAMES[:2] == ("heart_rate_bpm", "n_beats")
    assert FEATURE_NAMES[15:19] == ("axis_deg", "limb_qrs_max_mv", "precordial_qrs_max_mv", "sokolow_mv")
    # lead features are grouped by feature, leads in canonical order inside each group
    assert FEATURE_NAMES[19:31] == tuple(f"{lead}.r_mv" for lead in CANONICAL_LEADS)
    m = measure(synthetic_ecg(100, regular_beats(60)), 100)
    assert m.features.dtype == np.float32 and m.features.shape == (len(FEATURE_NAMES),)
    assert list(_named(m)) == list(FEATURE_NAMES)
    np.testing.assert_array_equal(measure_features(synthetic_ecg(100, regular_beats(60)), 100), m.features)


# --- synthetic rhythms --------------------------------------------------------------------------


@pytest.mark.parametrize("fs_hz", [100, 500])
@pytest.mark.parametrize("bpm", [60, 120])
def test_regular_rhythm_gives_rate_beats_and_no_variability(fs_hz: int, bpm: int) -> None:
    beats = regular_beats(bpm)
    m = measure(synthetic_ecg(fs_hz, beats, noise_mv=0.01), fs_hz)
    f = _named(m)
    assert f["heart_rate_bpm"] == pytest.approx(bpm, abs=2)
    assert m.n_beats == len(beats) == f["n_beats"]
    np.testing.assert_allclose(m.beats / fs_hz, beats, atol=0.03)  # each fiducial within 30 ms of its R peak
    assert f["rr_cv"] < 0.02 and f["rr_pdiff12"] == 0.0 and f["rr_pnn50"] == 0.0
    assert f["rr_min_rel"] == pytest.approx(1.0, abs=0.03) and f["rr_max_rel"] == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("fs_hz", [100, 500])
def test_qrs_duration_and_amplitudes_match_the_synthetic_beat(fs_hz: int) -> None:
    f = _feature_dict(synthetic_ecg(fs_hz, regular_beats(60)), fs_hz)
    assert 50 <= f["qrs_ms"] <= 110, f["qrs_ms"]  # the q-R-s complex spans about 80 ms
    assert f["II.r_mv"] == pytest.approx(1.2, rel=0.15)  # R of 1.0 x lead gain 1.2, from the PR baseline
    assert f["aVR.s_mv"] == pytest.approx(-1.0, rel=0.15)  # negative lead: the R wave becomes an S
    assert f["II.t_mv"] == pytest.approx(0.36, rel=0.2) and f["II.p_mv"] == pytest.approx(0.18, rel=0.3)
    assert 120 <= f["pr_ms"] <= 220, f["pr_ms"]  # P peak 160 ms before the R peak


def test_wide_qrs_is_measured_wide_at_100_and_500_hz() -> None:
    """A complex three times wider (like a bundle branch block) must read wider than 120 ms at both
    rates: at 500 Hz the QRS walk used to end at the first dip of the slope (the R apex, the S nadir)."""
    for fs_hz in (100, 500):
        narrow = _feature_dict(synthetic_ecg(fs_hz, regular_beats(60)), fs_hz)["qrs_ms"]
        wide = _feature_dict(synthetic_ecg(fs_hz, regular_beats(60), qrs_scale=3.0), fs_hz)["qrs_ms"]
        assert wide >= 120 and wide >= 1.5 * narrow, (fs_hz, narrow, wide)


def test_the_two_rates_agree_on_one_synthetic_ecg() -> None:
    a = _feature_dict(synthetic_ecg(100, regular_beats(75)), 100)
    b = _feature_dict(synthetic_ecg(500, regular_beats(75)), 500)
    assert abs(a["qrs_ms"] - b["qrs_ms"]) <= 20
    assert abs(a["pr_ms"] - b["pr_ms"]) <= 20
    for lead in ("I", "II", "V5"):
        assert a[f"{lead}.r_mv"] == pytest.approx(b[f"{lead}.r_mv"], rel=0.1)


def test_irregular_rr_raises_variability() -> None:
    rng = np.random.default_rng(1)
    rr = rng.uniform(0.45, 1.1, 30)  # an irregularly irregular rhythm, 55-130 bpm beat to beat
    beats = 0.4 + np.concatenate([[0.0], np.cumsum(rr)])
    irregular = _feature_dict(synthetic_ecg(100, beats[beats < SECONDS - 0.3]), 100)
    regular = _feature_dict(synthetic_ecg(100, regular_beats(75)), 100)
    assert irregular["rr_cv"] > 0.15 > regular["rr_cv"]
    assert irregular["rr_pdiff12"] > 0.5 and regular["rr_pdiff12"] == 0.0
    assert irregular["rr_pnn50"] > 0.5 and irregular["rr_rmssd_rel"] > 0.2


def test_premature_beat_lowers_rr_min_rel_and_leaves_the_rate() -> None:
    beats = regular_beats(60)
    beats[5] -= 0.4  # 400 ms early: a 600 ms RR then a 1400 ms compensatory pause
    f = _feature_dict(synthetic_ecg(100, beats), 100)
    assert f["rr_min_rel"] == pytest.approx(0.6, abs=0.05) and f["rr_max_rel"] == pytest.approx(1.4, abs=0.05)
    assert f["heart_rate_bpm"] == pytest.approx(60, abs=2)  # the median RR ignores the one early beat
    assert 0 < f["rr_pdiff12"] <= 0.5


# --- edge cases ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fs_hz", [100, 500])
def test_flat_signal_gives_the_no_beat_defaults(fs_hz: int) -> None:
    m = measure(np.zeros((12, int(SECONDS * fs_hz))), fs_hz)
    f = _named(m)
    assert m.n_beats == 0 and m.beats.size == 0
    assert {k: f[k] for k in RHYTHM_DEFAULTS} == RHYTHM_DEFAULTS
    width = round(BEAT_WINDOW_S[1] * fs_hz) - round(BEAT_WINDOW_S[0] * fs_hz)
    assert m.median_beat.shape == (12, width) and not m.median_beat.any()
    assert np.isfinite(m.features).all()
    assert all(f[f"{lead}.{k}"] == 0.0 for lead in CANONICAL_LEADS for k in LEAD_FEATURES)
    assert f["axis_sin"] == f["axis_cos"] == 0.0


def test_single_beat_gives_the_rhythm_defaults_with_one_beat() -> None:
    m = measure(synthetic_ecg(100, [5.0], waves=False), 100)
    f = _named(m)
    assert m.n_beats == 1 and f["n_beats"] == 1.0
    assert {k: f[k] for k in RHYTHM_DEFAULTS if k != "n_beats"} == {
        k: v for k, v in RHYTHM_DEFAULTS.items() if k != "n_beats"
    }
    assert np.isfinite(m.features).all() and f["II.r_mv"] > 0.5  # the one beat is still measured


def test_amplitudes_are_in_mv_and_clipped() -> None:
    x = synthetic_ecg(100, regular_beats(60))
    a, b = _feature_dict(x, 100), _feature_dict(2.0 * x, 100)
    for name in ("heart_rate_bpm", "rr_cv", "qrs_ms", "pr_ms", "qtc_ms", "axis_sin"):
        assert b[name] == pytest.approx(a[name], abs=1e-5), name  # scale-free: same beats and intervals
    for lead in CANONICAL_LEADS:
        assert b[f"{lead}.r_mv"] == pytest.approx(2 * a[f"{lead}.r_mv"], abs=1e-4)
    huge = _feature_dict(20.0 * x, 100)  # 24 mV R waves: clipped to the physiological range
    assert huge["II.r_mv"] == 8.0 and huge["aVR.s_mv"] == -8.0


# --- real records ----------------------------------------------------------------------------------


def _prepared(ptbxl, ecg_id: int, fs_hz: int) -> np.ndarray:
    cfg = PRESETS["100hz" if fs_hz == 100 else "500hz"][0]
    rec = read_record(ptbxl.record_path(ecg_id, fs_hz).with_suffix(".hea"))
    return prepare_signal(rec.signal, rec.fs_hz, cfg, rec.lead_names, rec.source)


@pytest.fixture(scope="module")
def ptbxl(ptbxl_root: Path):
    from diagecg.datasets.ptbxl import PtbxlDataset

    return PtbxlDataset(ptbxl_root)


@pytest.mark.parametrize("fs_hz", [100, 500])
def test_real_records_give_finite_deterministic_plausible_features(ptbxl, fs_hz: int) -> None:
    for ecg_id in ptbxl.ids(None, fs_hz=500)[:8]:
        x = _prepared(ptbxl, ecg_id, fs_hz)
        a, b = measure(x, fs_hz), measure(x.copy(), fs_hz)
        assert a.features.tobytes() == b.features.tobytes() and np.array_equal(a.beats, b.beats)
        assert np.isfinite(a.features).all()
        f = _named(a)
        assert 30 <= f["heart_rate_bpm"] <= 200 and f["n_beats"] >= 5, (ecg_id, f["heart_rate_bpm"])
        assert 40 <= f["qrs_ms"] <= 200, (ecg_id, f["qrs_ms"])


def test_100_and_500_hz_releases_give_the_same_rate(ptbxl) -> None:
    for ecg_id in ptbxl.ids(None, fs_hz=500)[:8]:
        lo = _feature_dict(_prepared(ptbxl, ecg_id, 100), 100)
        hi = _feature_dict(_prepared(ptbxl, ecg_id, 500), 500)
        assert lo["heart_rate_bpm"] == pytest.approx(hi["heart_rate_bpm"], rel=0.03), ecg_id
        assert lo["n_beats"] == hi["n_beats"], ecg_id


def test_afib_records_have_more_irregular_rr_than_sinus_rhythm(ptbxl) -> None:
    """On the shared PTB-XL labels: AFIB records' successive RR differences exceed 12.5% far more often."""
    ids = ptbxl.ids(None, fs_hz=100)
    afib = [i for i in ids if "AFIB" in ptbxl.entries[i].scp_codes][:20]
    sinus = [i for i in ids if {"SR"} <= ptbxl.entries[i].scp_codes.keys() - {"AFIB"}][:20]
    assert len(afib) == len(sinus) == 20
    af = np.array([_feature_dict(_prepared(ptbxl, i, 100), 100)["rr_pdiff12"] for i in afib])
    sr = np.array([_feature_dict(_prepared(ptbxl, i, 100), 100)["rr_pdiff12"] for i in sinus])
    assert np.median(af) >= np.median(sr) + 0.3, (np.median(af), np.median(sr))
    assert np.median(sr) <= 0.1


def test_summary_line_prints_values_and_marks_the_unmeasurable() -> None:
    values = {n: {"value": 100.0, "unit": "", "method": "m", "reason": None} for n in REPORT_MEASUREMENTS}
    values["pr_ms"] = {"value": None, "unit": "ms", "method": "m", "reason": "P waves not found"}
    line = summary_line({"n_beats": 10, "peak_lead": "II", "measurements": values})
    assert line.startswith("Measured: HR 100 bpm, RR CV 100.0%, PR n/m, QRS 100 ms")
    assert line.endswith("axis 100\u00b0")

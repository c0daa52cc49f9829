"""diagecg.delineation: rate of a simulated ECG, the axis of a synthetic cardiac vector, plausible values on
real PTB-XL fixture records (the same recording at 100 and 500 Hz agreeing), None with reasons on noise,
a 2 s record and neurokit2 failures, the plausibility gates, and the one-line error without neurokit2."""

from __future__ import annotations

import json
import math
import sys
import warnings

import numpy as np
import pytest

from diagecg.config import QualityConfig
from diagecg.constants import CANONICAL_LEADS
from diagecg.errors import SignalFileError
from diagecg.io import read_record, record_from_array
from diagecg.types import EcgRecord

nk = pytest.importorskip("neurokit2")

from diagecg import delineation  # noqa: E402  (after the skip: the module's tests need neurokit2)
from diagecg.delineation import MEASUREMENT_NAMES, UNITS, Measurement, measure_intervals  # noqa: E402

# precordial gains of the synthetic records (mV per unit of the frontal signal): all distinct, so no two
# leads are copies of one signal
V_GAINS = (-0.6, -0.3, 0.4, 0.9, 1.2, 1.0)


def vector_record(beat_mv: np.ndarray, fs_hz: float, axis_deg: float) -> EcgRecord:
    """A validated 12-lead record of one frontal cardiac vector at ``axis_deg``: lead I = s cos(axis),
    II = s cos(axis - 60), III = II - I and Goldberger's augmented leads, so every limb-lead relation
    holds exactly; the precordial leads are ``V_GAINS`` times s."""
    s = np.asarray(beat_mv, dtype=np.float64)
    a = math.radians(axis_deg)
    lead_i, lead_ii = math.cos(a) * s, math.cos(a - math.pi / 3) * s
    lead_iii = lead_ii - lead_i
    augmented = [-(lead_i + lead_ii) / 2, (lead_i - lead_iii) / 2, (lead_ii + lead_iii) / 2]  # aVR, aVL, aVF
    limb = [lead_i, lead_ii, lead_iii, *augmented]
    signal = np.stack(limb + [g * s for g in V_GAINS])  # (12, samples)
    # identical synthetic beats: the plausibility checks would (rightly) refuse them
    return record_from_array(
        signal, fs_hz, CANONICAL_LEADS, source="<synthetic>", quality=QualityConfig(plausibility=False)
    )


def _gauss(t: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - centre) / sigma) ** 2)


def gaussian_ecg(fs_hz: float, bpm: float, seconds: float = 10.0) -> np.ndarray:
    """(samples,) mV: P, a q-R-s complex with a positive net area, and T at each beat."""
    t = np.arange(int(round(seconds * fs_hz))) / fs_hz
    x = np.zeros_like(t)
    for b in np.arange(0.6, seconds - 0.5, 60.0 / bpm):
        x += 0.15 * _gauss(t, b - 0.16, 0.02) - 0.1 * _gauss(t, b - 0.025, 0.008) + 1.0 * _gauss(t, b, 0.01)
        x += -0.25 * _gauss(t, b + 0.025, 0.008) + 0.3 * _gauss(t, b + 0.28, 0.04)
    return x


def _reasons(m: delineation.Measurements) -> dict[str, str]:
    return {x.name: x.reason for x in m if x.reason is not None}


# --- synthetic records with known answers ---------------------------------------------------------------


@pytest.mark.parametrize(("fs_hz", "bpm"), [(500, 72), (100, 120), (500, 50)])
def test_simulated_ecg_gives_its_heart_rate_within_2_bpm(fs_hz: int, bpm: int) -> None:
    s = nk.ecg_simulate(duration=10, sampling_rate=fs_hz, heart_rate=bpm, random_state=42)
    m = measure_intervals(vector_record(s, fs_hz, axis_deg=50.0))
    assert m["heart_rate_bpm"].value == pytest.approx(bpm, abs=2)
    assert m["rr_cv_percent"].value is not None and m["rr_cv_percent"].value < 5  # a regular rhythm
    for name in ("qrs_ms", "qt_ms", "pr_ms"):
        low, high = delineation.PLAUSIBLE[name]
        assert m[name].value is not None and low <= m[name].value <= high, (name, m[name])


# no axis perpendicular to a limb lead (0, 30, 60, 90, ... deg), which would leave that lead flat
@pytest.mark.parametrize("axis_deg", [-45.0, 15.0, 75.0, 135.0, -105.0])
def test_axis_of_a_synthetic_cardiac_vector(axis_deg: float) -> None:
    m = measure_intervals(vector_record(gaussian_ecg(500, 75), 500, axis_deg))
    value = m["qrs_axis_deg"].value
    assert value is not None
    assert abs((value - axis_deg + 180) % 360 - 180) <= 3, (axis_deg, value)


def test_lead_i_positive_and_avf_negative_is_left_axis() -> None:
    rec = vector_record(gaussian_ecg(500, 75), 500, axis_deg=-45.0)
    i, avf = CANONICAL_LEADS.index("I"), CANONICAL_LEADS.index("aVF")
    assert rec.signal[i].max() > 0.5 and rec.signal[avf].min() < -0.5  # I upright, aVF inverted QRS
    assert measure_intervals(rec)["qrs_axis_deg"].value == pytest.approx(-45, abs=3)


# --- real records ---------------------------------------------------------------------------------------


def test_real_fixture_records_give_plausible_values(fixtures_dir) -> None:
    records = fixtures_dir / "records"
    for name in ("00002_hr", "00002_lr", "00008_lr"):
        m = measure_intervals(read_record(records / name))
        v = m.values()
        assert all(x is not None for x in v.values()), (name, _reasons(m))
        assert 40 <= v["heart_rate_bpm"] <= 100 and 0 <= v["rr_cv_percent"] < 10, (name, v)
        assert 60 <= v["qrs_ms"] <= 120 and 110 <= v["pr_ms"] <= 220 and 320 <= v["qt_ms"] <= 460, (name, v)
        assert 340 <= v["qtc_bazett_ms"] <= 460 and -30 <= v["qrs_axis_deg"] <= 90, (name, v)
        assert m.n_beats >= 7 and m.peak_lead in CANONICAL_LEADS
    # one recording, two sampling rates: the same measurements
    hr, lr = (measure_intervals(read_record(records / n)).values() for n in ("00002_hr", "00002_lr"))
    assert abs(hr["heart_rate_bpm"] - lr["heart_rate_bpm"]) <= 2
    for name in ("pr_ms", "qrs_ms", "qt_ms"):
        assert abs(hr[name] - lr[name]) <= 10, (name, hr[name], lr[name])
    assert abs(hr["qrs_axis_deg"] - lr["qrs_axis_deg"]) <= 5


def test_to_dict_is_json_ready_with_documented_keys(fixtures_dir) -> None:
    m = measure_intervals(read_record(fixtures_dir / "records" / "00008_lr"))
    d = m.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert list(d["measurements"]) == list(MEASUREMENT_NAMES) and d["n_beats"] == m.n_beats
    for name, row in d["measurements"].items():
        assert set(row) == {"value", "unit", "method", "reason"} and row["unit"] == UNITS[name]
        assert type(row["value"]) is float and row["reason"] is None and row["method"]
    assert "lead II" in d["measurements"]["pr_ms"]["method"]
    assert "Bazett" in d["measurements"]["qtc_bazett_ms"]["method"]
    cv, qrs = d["measurements"]["rr_cv_percent"]["value"], d["measurements"]["qrs_ms"]["value"]
    assert cv == round(cv, 1) and qrs == round(qrs)


def test_measurements_keep_no_state_between_records(fixtures_dir) -> None:
    # a record measured again after another, from a separate read, measures the same
    first = measure_intervals(read_record(fixtures_dir / "records" / "00003_lr")).to_dict()
    other = measure_intervals(read_record(fixtures_dir / "records" / "00008_lr")).to_dict()
    assert measure_intervals(read_record(fixtures_dir / "records" / "00003_lr")).to_dict() == first
    assert other != first


# --- unmeasurable records -------------------------------------------------------------------------------


def test_noise_only_record_gives_none_with_reasons() -> None:
    noise = np.random.default_rng(0).normal(scale=0.1, size=(12, 5000))
    rec = record_from_array(noise, 500, CANONICAL_LEADS, quality=QualityConfig(require_ecg=False))
    m = measure_intervals(rec)
    assert all(v is None for v in m.values().values()), m.values()
    reasons = _reasons(m)
    assert set(reasons) == set(MEASUREMENT_NAMES)
    assert all(r.startswith("not measurable") for r in reasons.values()), reasons


def test_two_second_record_gives_none_with_reasons(fixtures_dir) -> None:
    full = read_record(fixtures_dir / "records" / "00002_hr")  # 48 bpm: at most 2 beats in 2 s
    rec = record_from_array(full.signal[:, :1000], full.fs_hz, CANONICAL_LEADS)
    before = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neurokit2 warns on so short a signal: silenced inside the call only
        m = measure_intervals(rec)
        assert warnings.filters[0][0] == "error"
    assert warnings.filters == before
    assert all(v is None for v in m.values().values()), m.values()
    assert "fewer than 3 beats detected" in m["heart_rate_bpm"].reason


def test_a_failing_neurokit2_call_becomes_the_reason(fixtures_dir, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(nk, "ecg_delineate", broken)
    m = measure_intervals(read_record(fixtures_dir / "records" / "00002_lr"))
    failed = "neurokit2 ecg_delineate failed (RuntimeError: boom)"  # the first line of the message
    assert m["pr_ms"].value is None
    assert m["pr_ms"].reason == f"not measurable: lead II: {failed}; lead V1: {failed}"  # no AF hint
    for name in ("qt_ms", "qtc_bazett_ms", "qtc_fridericia_ms"):
        assert m[name].value is None
        assert m[name].reason == f"not measurable: lead II: {failed}; lead V5: {failed}"
    # what does not need the delineation is still measured
    assert m["heart_rate_bpm"].value is not None and m["qrs_ms"].value is not None
    assert m["qrs_axis_deg"].value is not None

    monkeypatch.setattr(nk, "ecg_peaks", broken)
    m = measure_intervals(read_record(fixtures_dir / "records" / "00002_lr"))
    assert all(x.value is None and "neurokit2 ecg_peaks failed" in x.reason for x in m)


def test_value_outside_the_plausible_range_becomes_none(fixtures_dir, monkeypatch) -> None:
    monkeypatch.setitem(delineation.PLAUSIBLE, "qrs_ms", (40.0, 50.0))
    m = measure_intervals(read_record(fixtures_dir / "records" / "00002_lr"))
    assert m["qrs_ms"].value is None
    assert m["qrs_ms"].reason.startswith("implausible: ") and "outside 40-50 ms" in m["qrs_ms"].reason
    assert m["heart_rate_bpm"].value is not None


def test_measurement_needs_exactly_one_of_value_and_reason() -> None:
    with pytest.raises(AssertionError):
        Measurement("qrs_ms", None, "ms", "m")
    with pytest.raises(AssertionError):
        Measurement("qrs_ms", 90.0, "ms", "m", reason="why")


def test_missing_neurokit2_names_the_extra(fixtures_dir, monkeypatch) -> None:
    rec = read_record(fixtures_dir / "records" / "00002_lr")
    monkeypatch.setitem(sys.modules, "neurokit2", None)  # import neurokit2 -> ImportError
    with pytest.raises(SignalFileError) as e:
        measure_intervals(rec)
    message = str(e.value)
    assert "\n" not in message and "neurokit2" in message and "pip install 'diagecg[delineation]'" in message


def test_degraded_record_with_flat_limb_leads_uses_the_other_leads(fixtures_dir) -> None:
    full = read_record(fixtures_dir / "records" / "00002_hr")
    degraded = QualityConfig(allow_flat_leads=True, require_ecg=False)  # flat limb leads: never answered
    x = full.signal.copy()
    x[CANONICAL_LEADS.index("II")] = 0.0  # a disconnected electrode
    m = measure_intervals(record_from_array(x, full.fs_hz, CANONICAL_LEADS, quality=degraded))
    assert m.peak_lead != "II" and m["heart_rate_bpm"].value == pytest.approx(48, abs=2)
    assert "lead V5" in m["qt_ms"].method and m["qt_ms"].value is not None
    assert "lead V1" in m["pr_ms"].method or "lead II: flat" in m["pr_ms"].reason
    assert m["qrs_axis_deg"].value is not None

    x[CANONICAL_LEADS.index("I")] = 0.0
    m = measure_intervals(record_from_array(x, full.fs_hz, CANONICAL_LEADS, quality=degraded))
    assert m["qrs_axis_deg"].value is None and m["qrs_axis_deg"].reason == "not measurable: lead(s) I flat"
    assert m["qrs_ms"].value is not None


def _odd_signals(base: np.ndarray) -> dict[str, tuple[np.ndarray, float]]:
    """Valid records (lenient quality checks) that are no ECG, or an ECG at an odd rate or with one lead."""
    rng = np.random.default_rng(0)
    t = np.arange(5000) / 500
    return {
        "sine": (np.sin(2 * np.pi * 1.2 * t) * np.linspace(0.5, 1.5, 12)[:, None], 500.0),
        "spikes": (
            np.where(rng.random((12, 5000)) > 0.999, 3.0, 0.0) + rng.normal(0, 0.01, (12, 5000)),
            500.0,
        ),
        "steps": (np.repeat(rng.normal(0, 1, (12, 50)), 100, axis=1), 500.0),
        "one live lead": (np.vstack([base[1:2], np.zeros((11, base.shape[1]))]), 500.0),
        "50 Hz": (base[:, ::10], 50.0),
        "1000 Hz": (np.repeat(base, 2, axis=1), 1000.0),
        "257.3 Hz": (base[:, np.round(np.arange(0, 5000, 500 / 257.3)).astype(int)], 257.3),
    }


def test_odd_valid_records_never_raise(fixtures_dir) -> None:
    base = read_record(fixtures_dir / "records" / "00002_hr").signal
    lenient = QualityConfig(require_ecg=False, allow_flat_leads=True)
    for name, (x, fs) in _odd_signals(base).items():
        m = measure_intervals(record_from_array(x, fs, CANONICAL_LEADS, quality=lenient))
        assert [x.name for x in m] == list(MEASUREMENT_NAMES), name
        assert all((x.value is None) == bool(x.reason) for x in m), name
        if name in ("sine", "spikes", "steps"):
            assert all(x.value is None for x in m), (name, m.values())
        else:
            assert m["heart_rate_bpm"].value == pytest.approx(48, abs=3), (name, m.values())


def test_implausible_qrs_leaves_what_depends_on_its_bounds_unmeasured(fixtures_dir, monkeypatch) -> None:
    monkeypatch.setitem(delineation.PLAUSIBLE, "qrs_ms", (150.0, 250.0))
    m = measure_intervals(read_record(fixtures_dir / "records" / "00002_lr"))
    assert m["qrs_ms"].reason.startswith("implausible: ")
    for name in ("pr_ms", "qt_ms", "qtc_bazett_ms", "qtc_fridericia_ms", "qrs_axis_deg"):
        assert m[name].value is None and "QRS duration is implausible" in m[name].reason, name
    assert m["heart_rate_bpm"].value is not None and m["rr_cv_percent"].value is not None


def test_report_measurements_have_the_names_and_layout_of_the_delineation() -> None:
    """diagecg.features.summary_line prints both; the keys must agree."""
    from diagecg.features import REPORT_MEASUREMENTS

    assert tuple(REPORT_MEASUREMENTS) == MEASUREMENT_NAMES
    assert {n: unit for n, (unit, _) in REPORT_MEASUREMENTS.items()} == UNITS

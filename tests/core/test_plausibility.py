"""The plausibility checks (``diagecg.plausibility``) on the garbage of issue 23, made from real fixture
records, and on the real records themselves (which they must not refuse). The counts on every real record
the project has are in the README (``bench/plausibility.py``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from diagecg.config import QualityConfig
from diagecg.constants import CANONICAL_LEADS
from diagecg.dsp import resample_poly
from diagecg.errors import SignalQualityError
from diagecg.formats import find_records
from diagecg.io import read_record, record_from_array
from diagecg.notes import WARNING_CODES
from diagecg.plausibility import CHECKS, note_code

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
L = {name: k for k, name in enumerate(CANONICAL_LEADS)}
SIMULATOR = "129DYPRG.XML"  # a HeartStart MRx recording whose beats repeat to within 0.03%: a simulator


def _reversed_arms(x: np.ndarray) -> np.ndarray:
    """Left and right arm electrodes swapped: I -> -I, II <-> III, aVR <-> aVL (Einthoven still holds)."""
    y = x.copy()
    y[L["I"]] = -x[L["I"]]
    y[[L["II"], L["III"]]] = x[[L["III"], L["II"]]]
    y[[L["aVR"], L["aVL"]]] = x[[L["aVL"], L["aVR"]]]
    return y


def _slower(x: np.ndarray, factor: int) -> np.ndarray:
    """Resampled ``factor`` x, the header's rate unchanged: the first 1/factor of the record fills it."""
    n = x.shape[1]
    return resample_poly(x[:, : n // factor + 1], factor, 1)[:, :n]


def _zeroed(x: np.ndarray, share: float = 0.1) -> np.ndarray:
    y = x.copy()
    y[:, np.random.default_rng(0).random(x.shape[1]) < share] = 0.0
    return y


def _noise_lead(x: np.ndarray) -> np.ndarray:
    y = x.copy()
    y[L["V3"]] = np.random.default_rng(1).normal(0, max(float(x[L["V3"]].std()), 0.1), x.shape[1])
    return y


ATTACKS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "arm electrodes swapped": lambda x, fs: _reversed_arms(x),
    "every lead inverted": lambda x, fs: -x,
    "x10": lambda x, fs: 10 * x,
    "x0.1": lambda x, fs: 0.1 * x,
    "time reversed": lambda x, fs: x[:, ::-1],
    "first second tiled": lambda x, fs: np.tile(x[:, : int(fs)], (1, 10))[:, : x.shape[1]],
    "played 5x slower": lambda x, fs: _slower(x, 5),
    "played 2x slower": lambda x, fs: _slower(x, 2),
    "V3 replaced by noise": lambda x, fs: _noise_lead(x),
    "10% of samples zeroed": lambda x, fs: _zeroed(x),
}
# (base record, attack) -> "refuse CODE", "refuse" (an earlier check), or "warn CODE"
EXPECTED: dict[tuple[str, str], str] = {
    **{
        ("00002_hr", a): e
        for a, e in {
            "arm electrodes swapped": "warn LIMB_LEADS_REVERSED",
            "every lead inverted": "warn LIMB_LEADS_REVERSED",
            "x10": "refuse",
            "x0.1": "warn AMPLITUDE_IMPLAUSIBLE",
            "time reversed": "warn TIME_REVERSED",
            "first second tiled": "refuse SIGNAL_REPEATS",
            "played 5x slower": "refuse RATE_CONTRADICTS_WAVEFORM",
            "played 2x slower": "warn RATE_CONTRADICTS_WAVEFORM",
            "V3 replaced by noise": "warn LEAD_NOISE",
            "10% of samples zeroed": "refuse LEAD_NOISE",
        }.items()
    },
    ("00003_lr", "x10"): "warn AMPLITUDE_IMPLAUSIBLE",
    ("00003_lr", "x0.1"): "refuse AMPLITUDE_IMPLAUSIBLE",
    ("00008_lr", "time reversed"): "warn TIME_REVERSED",
    ("00008_lr", "arm electrodes swapped"): "warn LIMB_LEADS_REVERSED",
    ("C00002", "V3 replaced by noise"): "warn LEAD_NOISE",
    ("C00002", "10% of samples zeroed"): "refuse LEAD_NOISE",
}


def _outcome(signal: np.ndarray, fs_hz: float, source: str, quantise: bool = True) -> str:
    """What reading ``signal`` gives: "refuse CODE", "refuse" (by an earlier check), "warn CODES" or
    "answered"; ``quantise``: in 1 uV steps, as a WFDB file would store it."""
    try:
        rec = record_from_array(
            np.round(signal, 3) if quantise else signal, fs_hz, CANONICAL_LEADS, source=source
        )
    except SignalQualityError as e:
        found = re.search(r"implausible as a recorded ECG \(([A-Z_]+)\)", str(e))
        return f"refuse {found.group(1)}" if found else "refuse"
    codes = sorted({c for c in (note_code(w) for w in rec.warnings) if c is not None})
    return f"warn {','.join(codes)}" if codes else "answered"


@pytest.mark.parametrize("base, attack", list(EXPECTED), ids=[f"{b}-{a}" for b, a in EXPECTED])
def test_the_issues_garbage_is_refused_or_warned(base: str, attack: str) -> None:
    rec = read_record(FIXTURES / "records" / f"{base}.hea")
    x = rec.signal[:, : int(10 * rec.fs_hz)].astype(np.float64)
    assert _outcome(ATTACKS[attack](x, rec.fs_hz), rec.fs_hz, attack) == EXPECTED[(base, attack)]


def _synthetic(
    fs_hz: float, n: int, rng: np.random.Generator, irregular: bool, noise_uv: float
) -> np.ndarray:
    """A sum-of-Gaussians P-QRS-T of one cardiac dipole; electrode potentials are its projections (plus
    per-electrode noise) and the 12 leads are built from them, so every limb-lead relation holds."""
    t = np.arange(n) / fs_hz
    waves = [
        (-0.2, 0.025, (0.1, 0.15, 0.05)),
        (-0.02, 0.012, (-0.1, -0.1, 0.1)),  # (s, s, dipole): P, Q
        (0.0, 0.012, (1.0, 1.2, -0.5)),
        (0.025, 0.012, (-0.2, -0.3, 0.6)),  # R, S
        (0.3, 0.06, (0.25, 0.3, -0.1)),
    ]  # T
    beats, b = [], 0.3
    while b < t[-1]:
        beats.append(b)
        b += rng.uniform(0.5, 1.1) if irregular else 0.85
    dipole = np.zeros((3, n))
    for b in beats:
        for centre, width, amplitude in waves:
            dipole += np.outer(amplitude, np.exp(-0.5 * ((t - b - centre) / width) ** 2))
    directions = {"RA": (-0.5, -0.5, 0.1), "LA": (0.5, -0.5, 0.1), "LL": (0.1, 0.6, 0.0)}
    for k, angle in enumerate(np.radians([-110, -90, -70, -45, -20, 0])):
        directions[f"V{k + 1}"] = (0.6 * np.cos(angle), 0.15, -0.6 * np.sin(angle))
    e = {name: np.asarray(d) @ dipole + rng.normal(0, noise_uv / 1000, n) for name, d in directions.items()}
    wct = (e["RA"] + e["LA"] + e["LL"]) / 3
    limb = [
        e["LA"] - e["RA"],
        e["LL"] - e["RA"],
        e["LL"] - e["LA"],
        e["RA"] - (e["LA"] + e["LL"]) / 2,
        e["LA"] - (e["RA"] + e["LL"]) / 2,
        e["LL"] - (e["RA"] + e["LA"]) / 2,
    ]
    return np.stack([*limb, *(e[f"V{k}"] - wct for k in range(1, 7))])


@pytest.mark.parametrize("fs_hz", [100.0, 500.0])
def test_synthetic_beats_are_refused_or_warned_as_repeats(fs_hz: float) -> None:
    rng = np.random.default_rng(3)
    n = int(10 * fs_hz)
    regular = _synthetic(fs_hz, n, rng, irregular=False, noise_uv=0.0)
    with pytest.raises(SignalQualityError, match=r"\(SIGNAL_REPEATS\)"):
        record_from_array(regular, fs_hz, CANONICAL_LEADS, source="synthetic")
    irregular = _synthetic(fs_hz, n, rng, irregular=True, noise_uv=0.0)  # the issue's case
    assert _outcome(irregular, fs_hz, "synthetic", quantise=False) in (
        "refuse SIGNAL_REPEATS",
        "warn SIGNAL_REPEATS",
    )


def test_every_real_fixture_record_passes_without_a_plausibility_warning() -> None:
    read = 0
    for path in find_records(FIXTURES):
        try:
            rec = read_record(path)
        except SignalQualityError as e:  # refused before these checks existed, for what they say
            assert "implausible as a recorded ECG" not in str(e), path
            continue
        except Exception:  # not an ECG at all (the EEG EDF) or not readable here
            continue
        read += 1
        codes = {note_code(w) for w in rec.warnings} - {None}
        assert codes == ({"SIGNAL_REPEATS"} if path.name == SIMULATOR else set()), (path, rec.warnings)
    assert read >= 10


def test_a_lead_held_constant_is_dead_like_a_flat_one() -> None:
    """Two real PTB-XL records (ecg_id 19299, 20045) hold V6 constant for 7.1 s and 9.3 s: an electrode
    that came off, refused like a flat lead unless degraded mode answers their rhythm."""
    rec = read_record(FIXTURES / "records" / "00002_hr.hea")
    x = rec.signal.copy()
    x[L["V6"], 1000:] = x[L["V6"], 1000]  # alive for 2 s, then held
    with pytest.raises(SignalQualityError, match="flat lead.*V6.*one value held"):
        record_from_array(x, rec.fs_hz, CANONICAL_LEADS)
    degraded = record_from_array(x, rec.fs_hz, CANONICAL_LEADS, quality=QualityConfig(allow_flat_leads=True))
    assert any("degraded record" in w and "V6" in w for w in degraded.warnings)
    x = rec.signal.copy()
    x[L["V6"], 1000:1400] = x[L["V6"], 1000]  # 0.8 s: a warning only
    assert _outcome(x, rec.fs_hz, "held") == "warn LEAD_NOISE"


def test_every_check_has_a_warning_code_and_the_checks_can_be_turned_off() -> None:
    assert set(CHECKS.values()) <= set(WARNING_CODES)
    rec = read_record(FIXTURES / "records" / "00002_hr.hea")
    tiled = np.tile(rec.signal[:, :500], (1, 10))
    off = record_from_array(tiled, rec.fs_hz, CANONICAL_LEADS, quality=QualityConfig(plausibility=False))
    assert not {note_code(w) for w in off.warnings} - {None}
    with pytest.raises(ValueError, match="rate_warn"):
        QualityConfig(rate_warn=2.0, rate_refuse=1.0)

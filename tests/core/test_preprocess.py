"""preprocess: shapes, resampling against analytic signals and PTB-XL's own 100 Hz release, z-score,
windowing, determinism, the golden output, and training/runtime parity."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from diagecg.config import PRESETS, PreprocessConfig
from diagecg.constants import CANONICAL_LEADS
from diagecg.errors import SignalQualityError
from diagecg.features import FEATURE_NAMES, measure_features
from diagecg.io import read_record
from diagecg.preprocess import (
    measure_signal,
    measurement_config,
    model_inputs,
    prepare_signal,
    preprocess,
    preprocess_signal,
    resample,
    resample_factors,
    zscore,
)
from diagecg.types import EcgRecord

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "00002_lr_100hz.npy"


def sine_record(fs_hz: float, seconds: float, hz: float = 3.0) -> EcgRecord:
    t = np.arange(int(round(fs_hz * seconds))) / fs_hz
    x = np.stack([np.sin(2 * np.pi * hz * t + k) * (1 + 0.1 * k) for k in range(12)]).astype(np.float32)
    return EcgRecord(signal=x, fs_hz=fs_hz, lead_names=CANONICAL_LEADS, source="sine")


@pytest.fixture(scope="module")
def rec_lr(records_dir_module: Path) -> EcgRecord:
    return read_record(records_dir_module / "00002_lr")


@pytest.fixture(scope="module")
def records_dir_module() -> Path:
    return Path(__file__).resolve().parents[1] / "fixtures" / "records"


# --- resampling -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fs_in", "fs_out", "factors"),
    [
        (100, 500, (5, 1)),
        (500, 100, (1, 5)),
        (1000, 500, (1, 2)),
        (250, 100, (2, 5)),
        (257, 500, (500, 257)),
        (360, 500, (25, 18)),
        (500, 500, (1, 1)),
    ],
)
def test_resample_factors_are_exact(fs_in: float, fs_out: float, factors: tuple[int, int]) -> None:
    assert resample_factors(fs_in, fs_out) == factors


@pytest.mark.parametrize(("fs_in", "fs_out"), [(100, 500), (500, 100), (1000, 500), (250, 100), (360, 500)])
def test_resample_sine_matches_analytic(fs_in: int, fs_out: int) -> None:
    x = sine_record(fs_in, 10.0).signal.astype(np.float64)
    y = resample(x, fs_in, fs_out)
    assert y.shape == (12, int(np.ceil(x.shape[1] * fs_out / fs_in)))
    expected = sine_record(fs_out, 10.0).signal
    inner = slice(fs_out, 9 * fs_out)  # edges of a polyphase filter are approximate
    np.testing.assert_allclose(y[:, inner], expected[:, inner], atol=5e-3)  # amplitude ~1-2


def test_500hz_record_resampled_matches_ptbxl_100hz_release(records_dir_module: Path) -> None:
    hi = read_record(records_dir_module / "00002_hr").signal.astype(np.float64)
    lo = read_record(records_dir_module / "00002_lr").signal.astype(np.float64)
    down = resample(hi, 500, 100)  # (12, 1000)
    inner = slice(20, 980)  # PTB-XL's two releases differ in the last 60 ms of this record
    corr = [np.corrcoef(down[i, inner], lo[i, inner])[0, 1] for i in range(12)]
    assert min(corr) > 0.99, corr


# --- pipeline -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("name", ["00002_lr", "00002_hr", "C00002"])
def test_presets_shape_dtype_zscore(records_dir_module: Path, preset: str, name: str) -> None:
    cfg = PRESETS[preset][0]
    x = preprocess(read_record(records_dir_module / name), cfg)
    assert x.shape == (12, cfg.n_samples) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=1), 1, atol=1e-5)


def test_1000hz_15_lead_record(shared_data: Path) -> None:
    rec = read_record(shared_data / "wfdb_sample" / "s0010_re")
    for cfg in (PRESETS["500hz"][0], PRESETS["100hz"][0]):
        x = preprocess(rec, cfg)
        assert x.shape == (12, cfg.n_samples)


def test_preprocess_is_deterministic(rec_lr: EcgRecord) -> None:
    cfg = PRESETS["500hz"][0]
    a, b = preprocess(rec_lr, cfg), preprocess(rec_lr, cfg)
    assert a.tobytes() == b.tobytes()


def test_golden_output(rec_lr: EcgRecord) -> None:
    """Pins the 100 Hz preset on a real record; regenerate only for an intended change (bump the bundle
    format then): ``np.save(GOLDEN, preprocess(read_record(".../00002_lr"), PRESETS["100hz"][0]))``."""
    np.testing.assert_allclose(preprocess(rec_lr, PRESETS["100hz"][0]), np.load(GOLDEN), atol=1e-5)


def test_lead_order_is_canonicalised(rec_lr: EcgRecord) -> None:
    cfg = PRESETS["100hz"][0]
    order = list(range(11, -1, -1))
    shuffled = preprocess_signal(rec_lr.signal[order], 100, cfg, [CANONICAL_LEADS[i].lower() for i in order])
    np.testing.assert_array_equal(shuffled, preprocess(rec_lr, cfg))


def test_highpass_removes_baseline_wander(rec_lr: EcgRecord) -> None:
    t = np.arange(1000) / 100.0
    wander = 2.0 * np.sin(2 * np.pi * 0.1 * t)  # 0.1 Hz, 2 mV
    drifted = dataclasses.replace(rec_lr, signal=(rec_lr.signal + wander).astype(np.float32))
    on = PreprocessConfig(fs_hz=100, highpass_hz=0.5)
    off = PreprocessConfig(fs_hz=100, highpass_hz=None)
    err_on = np.abs(preprocess(drifted, on) - preprocess(rec_lr, on)).mean()
    err_off = np.abs(preprocess(drifted, off) - preprocess(rec_lr, off)).mean()
    assert err_on < 0.1 < err_off


def test_lowpass_removes_high_frequency_noise() -> None:
    clean = sine_record(500, 10.0, hz=3.0)
    t = np.arange(5000) / 500.0
    hum = 0.3 * np.sin(2 * np.pi * 120 * t)
    noisy = dataclasses.replace(clean, signal=(clean.signal + hum).astype(np.float32))
    cfg = PreprocessConfig(fs_hz=500, highpass_hz=None, lowpass_hz=40.0, filter_order=4)
    inner = slice(500, 4500)
    assert np.abs(preprocess(noisy, cfg) - preprocess(clean, cfg))[:, inner].max() < 0.02


# --- windowing ---------------------------------------------------------------------------------------------


def test_longer_record_is_cropped_at_start_or_center() -> None:
    t = np.arange(3000) / 100.0
    ramp = np.tile(np.sin(2 * np.pi * 1.3 * t) + t / 10, (12, 1)).astype(np.float32)  # 30 s
    rec = EcgRecord(signal=ramp, fs_hz=100.0, lead_names=CANONICAL_LEADS)
    base = PreprocessConfig(fs_hz=100, highpass_hz=None)
    start = preprocess(rec, base)
    center = preprocess(rec, dataclasses.replace(base, crop="center"))

    def zscore(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64)
        return (a - a.mean(1, keepdims=True)) / a.std(1, keepdims=True)

    np.testing.assert_allclose(start, zscore(ramp[:, :1000]), atol=1e-5)
    np.testing.assert_allclose(center, zscore(ramp[:, 1000:2000]), atol=1e-5)


def test_too_short_record_names_required_and_actual_seconds() -> None:
    rec = sine_record(100, 8.0)
    with pytest.raises(SignalQualityError, match=r"too short: 8\.000 s.*needs 10 s.*at least 10 s"):
        preprocess(rec, PreprocessConfig(fs_hz=100))


def test_short_record_is_edge_padded_within_pad_short_s() -> None:
    rec = sine_record(100, 9.5)
    cfg = PreprocessConfig(fs_hz=500, highpass_hz=None, pad_short_s=0.5)
    x = preprocess(rec, cfg)
    assert x.shape == (12, 5000)
    assert np.all(x[:, 4750:] == x[:, 4749:4750])  # the padded tail repeats the last sample
    with pytest.raises(SignalQualityError, match="too short"):
        preprocess(sine_record(100, 9.4), cfg)


def test_min_duration_overrides_pad_short() -> None:
    cfg = PreprocessConfig(fs_hz=100, highpass_hz=None, min_duration_s=5.0, crop="center")
    x = preprocess(sine_record(100, 6.0), cfg)
    assert x.shape == (12, 1000)
    assert np.all(x[:, :200] == x[:, 200:201])  # centred: padded on both sides


def test_nan_is_rejected() -> None:
    rec = sine_record(100, 10.0)
    rec.signal[3, 10] = np.nan
    with pytest.raises(SignalQualityError, match="NaN"):
        preprocess(rec, PreprocessConfig(fs_hz=100))


# --- parity: the training path and the runtime path are one function ----------------------------------------

REPO = Path(__file__).resolve().parents[2]
SIGNAL_MATH = {"resample_poly", "resample", "sosfiltfilt", "filtfilt", "butter", "decimate", "lfilter"}


def _imports_and_calls(path: Path) -> tuple[set[tuple[str, str]], set[str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    imports = {
        (n.module or "", a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names
    }
    calls = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            f = n.func
            calls.add(f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", ""))
    return imports, calls


def test_no_second_preprocessing_implementation() -> None:
    """training/, export/ and runtime/ call diagecg.preprocess; none resamples or filters by itself."""
    for folder in ("training", "export", "runtime"):
        for path in sorted((REPO / folder).rglob("*.py")):
            _, calls = _imports_and_calls(path)
            own = calls & SIGNAL_MATH
            assert not own, f"{path.relative_to(REPO)} calls {sorted(own)}: use diagecg.preprocess instead"
    imports, _ = _imports_and_calls(REPO / "runtime" / "ecg_codes.py")  # where the runtime reads windows
    assert ("diagecg.preprocess", "model_inputs") in imports  # the signal and its measurements, one call


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_training_and_runtime_paths_are_identical(ptbxl_root: Path, preset: str) -> None:
    import diagecg.preprocess as core
    import diagecg.training.ecg_data as training_data
    from diagecg.datasets.ptbxl import PtbxlDataset

    assert training_data.prepare_signal is core.prepare_signal and training_data.zscore is core.zscore
    assert training_data.measure_signal is core.measure_signal
    cfg = PRESETS[preset][0]
    ptbxl = PtbxlDataset(ptbxl_root)
    loaded = training_data.load_signals(ptbxl, [2], cfg, progress=False, keep_mv=True)
    assert loaded.ids == [2] and not loaded.skipped
    # the runtime rebuilds the config from the bundle manifest (JSON), reads the record and calls preprocess
    runtime_cfg = PreprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    path = ptbxl.record_path(2, training_data.source_fs_hz(cfg.fs_hz))
    runtime_x, runtime_f = model_inputs(read_record(path), runtime_cfg)
    assert loaded.signals[0].dtype == runtime_x.dtype == np.float32
    np.testing.assert_array_equal(loaded.signals[0], runtime_x)
    np.testing.assert_array_equal(loaded.features[0], runtime_f)  # the summary head's input, too
    np.testing.assert_array_equal(loaded.signals[0], preprocess(read_record(path), runtime_cfg))
    rec = read_record(path)
    mv = prepare_signal(rec.signal, rec.fs_hz, runtime_cfg, rec.lead_names, rec.source)
    assert loaded.prepared_mv is not None and loaded.prepared_mv.shape == (1, 12, cfg.n_samples)
    np.testing.assert_array_equal(loaded.prepared_mv[0], mv.astype(np.float32))  # mV, for augmentation


# --- the prepared mV window and the model inputs --------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("name", ["00002_lr", "00002_hr"])
def test_preprocess_is_zscore_of_the_prepared_window(
    records_dir_module: Path, preset: str, name: str
) -> None:
    cfg = PRESETS[preset][0]
    rec = read_record(records_dir_module / name)
    x = prepare_signal(rec.signal, rec.fs_hz, cfg, rec.lead_names, rec.source)
    assert x.shape == (12, cfg.n_samples) and x.dtype == np.float64
    np.testing.assert_array_equal(preprocess(rec, cfg), zscore(x, cfg))
    signal, feats = model_inputs(rec, cfg)
    np.testing.assert_array_equal(signal, preprocess(rec, cfg))
    assert feats.dtype == np.float32
    # measured on the same window at the measurement rate and bandwidth, from the record as read
    m_cfg = measurement_config(cfg)
    assert (m_cfg.fs_hz, m_cfg.lowpass_hz) == (cfg.measure_fs_hz, cfg.measure_lowpass_hz)
    assert m_cfg.window_s == cfg.window_s
    m = prepare_signal(rec.signal, rec.fs_hz, m_cfg, rec.lead_names, rec.source)
    np.testing.assert_array_equal(feats, measure_features(m, cfg.measure_fs_hz))


def test_measurements_agree_at_100_and_500_hz(ptbxl_root: Path) -> None:
    """One ECG recorded at 100 and at 500 Hz (PTB-XL ships both for ecg_id <= 500) measures the same:
    heart rate within 1 bpm and PR/QRS/QTc within one 100 Hz sample (10 ms) on nearly every record."""
    from diagecg.features import FEATURE_NAMES

    cfg = PRESETS["100hz"][0]
    names = ("heart_rate_bpm", "pr_ms", "qrs_ms", "qtc_ms")
    tol = np.array([1.0, 10.0, 10.0, 10.0])
    cols = [FEATURE_NAMES.index(n) for n in names]
    headers = sorted((ptbxl_root / "records500" / "00000").glob("*_hr.hea"))[:60]
    assert len(headers) >= 30
    within = []
    for hea in headers:
        feats = []
        for path in (hea, ptbxl_root / "records100" / "00000" / hea.name.replace("_hr", "_lr")):
            rec = read_record(path)
            feats.append(measure_signal(rec.signal, rec.fs_hz, cfg, rec.lead_names)[cols])
        within.append(np.abs(feats[0] - feats[1]) <= tol)
    share = np.mean(within, axis=0)
    assert (share >= 0.95).all(), dict(zip(names, share.round(3), strict=True))


def test_prepared_window_keeps_millivolts(rec_lr: EcgRecord) -> None:
    """Before the z-score the window is linear in the input: amplitudes stay in mV for diagecg.features."""
    cfg = PRESETS["100hz"][0]
    x = prepare_signal(rec_lr.signal, rec_lr.fs_hz, cfg, rec_lr.lead_names)
    doubled = prepare_signal(2 * rec_lr.signal, rec_lr.fs_hz, cfg, rec_lr.lead_names)
    np.testing.assert_allclose(doubled, 2 * x, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(zscore(doubled, cfg), zscore(x, cfg), atol=1e-5)  # the z-score removes it
    assert 0.2 < np.abs(x).max() < 10  # a real 12-lead ECG in mV, not in z units
    _, f_x = model_inputs(rec_lr, cfg)
    _, f_2x = model_inputs(dataclasses.replace(rec_lr, signal=2 * rec_lr.signal), cfg)
    r = FEATURE_NAMES.index("II.r_mv")
    assert f_2x[r] == pytest.approx(2 * f_x[r], rel=1e-4)  # the measurements see the gain


def test_zscore_floors_the_std_of_a_flat_lead() -> None:
    cfg = PreprocessConfig(fs_hz=100)
    x = np.zeros((12, 1000))
    x[0] = np.sin(np.arange(1000) / 10.0)
    z = zscore(x, cfg)
    assert z.dtype == np.float32 and np.isfinite(z).all()
    assert not z[1:].any()  # flat leads stay zero instead of dividing by zero
    np.testing.assert_allclose(z[0].std(), 1, atol=1e-5)

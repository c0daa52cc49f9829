"""The one preprocessing implementation (conventions: defined once): record -> model input, numpy only.

Training calls :func:`preprocess` and then ``torch.from_numpy``; the runtime rebuilds the same
``PreprocessConfig`` from ``manifest["preprocess"]`` and calls the same function. Steps, in order:

1. leads in canonical order (``diagecg.leads``);
2. resample to ``cfg.fs_hz`` by ``diagecg.dsp.resample_poly`` (exact rational factor, linear edge padding;
   ``scipy.signal.resample_poly(..., padtype="line")`` to float64 rounding);
3. optional zero-phase Butterworth high-/low-pass over the whole record (``diagecg.dsp.butter_filtfilt``,
   which computes ``scipy.signal.sosfiltfilt``);
4. crop to ``cfg.window_s`` (from the start or the centre), or edge-pad a record short by at most
   ``cfg.pad_short_s``; anything shorter is a ``SignalQualityError``;
5. per-lead z-score.

Everything runs in float64 and returns float32 (12, cfg.n_samples); the result is deterministic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from diagecg import dsp
from diagecg.config import PreprocessConfig
from diagecg.constants import CANONICAL_LEADS
from diagecg.errors import SignalQualityError
from diagecg.features import measure_features
from diagecg.leads import canonical_lead_order
from diagecg.types import EcgRecord, F32Array

MAX_RESAMPLE_TERM = 10_000  # largest up/down factor of the polyphase resampler (500/257 Hz is fine)


def resample_factors(fs_in_hz: float, fs_out_hz: float) -> tuple[int, int]:
    """``(up, down)`` with ``fs_out / fs_in == up / down`` (exact for decimal rates such as 257.0)."""
    ratio = Fraction(str(float(fs_out_hz))) / Fraction(str(float(fs_in_hz)))
    ratio = ratio.limit_denominator(MAX_RESAMPLE_TERM)
    return ratio.numerator, ratio.denominator


def resample(x: np.ndarray, fs_in_hz: float, fs_out_hz: float) -> np.ndarray:
    """Resample along the last axis; ``(leads, n) -> (leads, ceil(n * up / down))``."""
    up, down = resample_factors(fs_in_hz, fs_out_hz)
    if up == down:
        return x
    # edges extended by their trend, not zeros, so a DC offset does not ring at the edges
    return dsp.resample_poly(x, up, down)


def _filter(x: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Zero-phase Butterworth filtering at ``cfg.fs_hz`` along the last axis."""
    bands = []
    if cfg.highpass_hz is not None:
        bands.append(("highpass", cfg.highpass_hz))
    if cfg.lowpass_hz is not None:
        bands.append(("lowpass", cfg.lowpass_hz))
    for btype, hz in bands:
        x = dsp.butter_filtfilt(x, cfg.filter_order, hz, btype, cfg.fs_hz)
    return x


def _window(x: np.ndarray, cfg: PreprocessConfig, source: str, duration_s: float) -> np.ndarray:
    """Crop or edge-pad ``(leads, n)`` to ``(leads, cfg.n_samples)``.

    The record must last at least ``cfg.min_duration_s`` (None: ``window_s - pad_short_s``); whatever
    it lacks of the window is filled by repeating its edge values.
    """
    required_s = cfg.min_duration_s if cfg.min_duration_s is not None else cfg.window_s - cfg.pad_short_s
    if duration_s < required_s - 0.5 / cfg.fs_hz:
        raise SignalQualityError(
            f"{source}: record too short: {duration_s:.3f} s, the model window needs {cfg.window_s:g} s "
            f"(at least {required_s:g} s, the rest edge-padded; pad_short_s={cfg.pad_short_s:g})"
        )
    n_out = cfg.n_samples
    n = x.shape[-1]
    if n >= n_out:
        start = 0 if cfg.crop == "start" else (n - n_out) // 2
        return x[:, start : start + n_out]
    missing = n_out - n
    widths = (0, missing) if cfg.crop == "start" else (missing // 2, missing - missing // 2)
    return np.pad(x, ((0, 0), widths), mode="edge")


def prepare_signal(
    signal: np.ndarray,
    fs_hz: float,
    cfg: PreprocessConfig,
    lead_names: Sequence[str] = CANONICAL_LEADS,
    source: str = "<array>",
) -> np.ndarray:
    """Steps 1-4 of the module docstring: float64 (12, cfg.n_samples) in mV, before the z-score.

    This is what ``diagecg.features`` measures; :func:`preprocess_signal` z-scores it.

    Raises:
        SignalQualityError: the record is shorter than the window allows, or contains NaN/inf.
        LeadError: the leads cannot be mapped to the 12 canonical leads.
    """
    x = np.asarray(signal)
    assert x.ndim == 2, f"signal must be (leads, samples), got {x.shape}"
    if tuple(lead_names) != CANONICAL_LEADS:
        indices, _ = canonical_lead_order(lead_names)
        x = x[indices]
    x = x.astype(np.float64)  # (12, n)
    if not np.isfinite(x).all():
        raise SignalQualityError(f"{source}: NaN/inf samples; read records with diagecg.io.read_record")
    duration_s = x.shape[-1] / fs_hz
    x = resample(x, fs_hz, cfg.fs_hz)  # (12, n) -> (12, n * cfg.fs_hz / fs_hz)
    x = _filter(x, cfg)
    x = _window(x, cfg, source, duration_s)  # -> (12, cfg.n_samples)
    assert x.shape == (len(CANONICAL_LEADS), cfg.n_samples), x.shape
    return x


def zscore(x: np.ndarray, cfg: PreprocessConfig) -> F32Array:
    """Step 5: per-lead z-score of a prepared (12, n) signal; float32."""
    mean = x.mean(axis=-1, keepdims=True)
    std = x.std(axis=-1, keepdims=True)
    return ((x - mean) / np.maximum(std, cfg.zscore_eps)).astype(np.float32)


def preprocess_signal(
    signal: np.ndarray,
    fs_hz: float,
    cfg: PreprocessConfig,
    lead_names: Sequence[str] = CANONICAL_LEADS,
    source: str = "<array>",
) -> F32Array:
    """Preprocess a (leads, samples) mV array; see the module docstring for the steps.

    Args:
        signal: float mV, shape (leads, samples), rows named by ``lead_names``.
        fs_hz: sampling rate of ``signal`` in Hz.
        cfg: the preprocessing config (stored in the bundle manifest).
        lead_names: row names; reordered to ``CANONICAL_LEADS``.
        source: named in error messages.

    Returns:
        float32 array of shape (12, cfg.n_samples), each lead with mean 0 and std 1.

    Raises:
        SignalQualityError: the record is shorter than the window allows, or contains NaN/inf.
        LeadError: the leads cannot be mapped to the 12 canonical leads.
    """
    return zscore(prepare_signal(signal, fs_hz, cfg, lead_names, source), cfg)


def preprocess(record: EcgRecord, cfg: PreprocessConfig) -> F32Array:
    """Turn a record into the model input: float32 (12, cfg.n_samples), z-scored per lead.

    This is the only preprocessing implementation: training and the runtime both call it.

    Raises:
        SignalQualityError: the record is too short for ``cfg.window_s`` (beyond ``cfg.pad_short_s``).
    """
    return preprocess_signal(record.signal, record.fs_hz, cfg, record.lead_names, record.source)


def measurement_config(cfg: PreprocessConfig) -> PreprocessConfig:
    """The preprocessing of the signal that ``diagecg.features`` measures: the model's window, crop and
    baseline filter, at ``cfg.measure_fs_hz`` and low-passed at ``cfg.measure_lowpass_hz``.

    One rate and one bandwidth for every record: a 100 Hz record is upsampled to it and a 500 Hz one
    decimated, both band-limited below the 100 Hz release's Nyquist frequency, so the same ECG
    recorded at either rate gives the same beats and intervals (the model rate, 100 Hz, would put
    every interval on a 10 ms grid and let high-frequency noise of a 500 Hz record count as beats).
    """
    return dataclasses.replace(
        cfg,
        fs_hz=cfg.measure_fs_hz,
        lowpass_hz=cfg.measure_lowpass_hz,
        highpass_hz=cfg.highpass_hz if cfg.highpass_hz is not None else 0.5,
    )


def measure_signal(
    signal: np.ndarray,
    fs_hz: float,
    cfg: PreprocessConfig,
    lead_names: Sequence[str] = CANONICAL_LEADS,
    source: str = "<array>",
) -> F32Array:
    """The measurements float32 (len(diagecg.features.FEATURE_NAMES),) of the model window of a
    (leads, samples) mV signal at any rate: :func:`prepare_signal` with :func:`measurement_config`,
    then ``diagecg.features``. Training (on augmented model-rate signals too) and the runtime call this."""
    m_cfg = measurement_config(cfg)
    return measure_features(prepare_signal(signal, fs_hz, m_cfg, lead_names, source), m_cfg.fs_hz)


def model_inputs(record: EcgRecord, cfg: PreprocessConfig) -> tuple[F32Array, F32Array]:
    """The two inputs of the ECG tokenizer: the z-scored signal float32 (12, cfg.n_samples) and
    the measurements float32 (len(diagecg.features.FEATURE_NAMES),) of the same window in mV, measured
    on the record at its own rate (:func:`measure_signal`).

    Raises:
        SignalQualityError, LeadError: as :func:`preprocess`.
    """
    x = prepare_signal(record.signal, record.fs_hz, cfg, record.lead_names, record.source)
    return zscore(x, cfg), measure_signal(record.signal, record.fs_hz, cfg, record.lead_names, record.source)


# a record longer than the window by more than this share of it is analysed in several windows
WINDOW_SLACK = 0.05


def record_windows(record: EcgRecord, cfg: PreprocessConfig) -> list[tuple[float, float, EcgRecord]]:
    """Cover a whole record with model windows: ``[(start_s, end_s, window record)]``.

    A record up to ``window_s * (1 + WINDOW_SLACK)`` long is one window, the record itself (cropped
    or padded by :func:`preprocess` as before). A longer one is cut into ``k = ceil(duration /
    window_s)`` windows of exactly ``window_s``, evenly spaced from the start to the end: they
    overlap when the duration is not a multiple of the window, and every sample is in at least
    one. Windows start at least half a window apart, so that no window is a near-copy of another
    (a 10.5 s record gave two windows 0.5 s apart): a record shorter than 1.5 windows is analysed in
    its first ``window_s`` only, and the span not analysed is the end of the last window to the end
    of the record. Each window record keeps the record's leads, patient, id, source and warnings.
    """
    duration = record.duration_s
    if duration <= cfg.window_s * (1 + WINDOW_SLACK):
        return [(0.0, round(duration, 3), record)]
    n = record.signal.shape[1]
    width = int(round(cfg.window_s * record.fs_hz))
    k = int(np.ceil(n / width))
    while k > 1 and (n - width) / (k - 1) < width / 2:  # near-copies: fewer windows (only k = 2 can be)
        k -= 1
    starts = np.linspace(0, n - width, k).round().astype(int) if k > 1 else np.zeros(1, dtype=int)
    return [
        (
            round(a / record.fs_hz, 3),
            round((a + width) / record.fs_hz, 3),
            dataclasses.replace(record, signal=record.signal[:, a : a + width]),
        )
        for a in starts
    ]


def record_measurements(record: EcgRecord, cfg: PreprocessConfig) -> F32Array:
    """The measurements (``diagecg.features.FEATURE_NAMES``) of a record as the runtime computes them: per
    analysed window (:func:`record_windows`), at the record's own rate; a long record's are the median
    over its windows. What the ruler scores (``diagecg.scoring.ruler_scores``)."""
    feats = np.stack([model_inputs(w, cfg)[1] for _, _, w in record_windows(record, cfg)])
    return np.median(feats, axis=0).astype(np.float32)

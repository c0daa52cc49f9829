"""Global ECG measurements in numpy: beats, rhythm, and the median beat's intervals and amplitudes.

The ECG tokenizer sees each lead z-scored, which removes the amplitudes in mV (voltage criteria of
hypertrophy) and makes the rate and the regularity of the rhythm something a small network must
infer from a 10 s window. These measurements restore them, computed the way automated ECG
interpretation does, on the model's window in mV at one measurement rate and bandwidth whatever the
record's own rate (``diagecg.preprocess.measure_signal``: 250 Hz, 40 Hz low-pass), so the same ECG
recorded at 100 or 500 Hz measures the same. They are the one definition of each number: the
tokenizer's summary head and measurement tokens read them, a report prints them
(:func:`report_measurements`), an answer cites them as evidence (``diagecg.criteria``).

1. **Beats**: a QRS energy signal (squared slope summed over the 12 leads, integrated over
   ~100 ms, Pan & Tompkins 1985), its peaks above an adaptive threshold with a 250 ms refractory
   period, and a search-back at half the threshold inside any RR gap longer than 1.6x the median;
   each fiducial point then moved to where its QRS best matches the median QRS (cross-correlation).
2. **Rhythm**: heart rate (the mean of the middle half of the RR intervals), RR variability
   (coefficient of variation, RMSSD, share of successive
   RR differences above 50 ms and above 12.5%), shortest/longest RR relative to the median
   (premature beats, pauses).
3. **Median beat**: the beats whose preceding RR lies within 20% of the median (all beats when
   fewer than three do), aligned on their fiducial point, median per lead; QRS onset/offset where
   the summed slope of the median beat falls below 15% of its peak; baseline from the PR segment.
4. **Intervals and amplitudes**: QRS duration, an estimate of the PR interval (P peak in lead II to
   QRS onset) and of QT (QRS onset to T peak + 40 ms, Bazett-corrected; P and T peaks on the waves
   smoothed over 40 ms), the frontal QRS axis (net QRS of I and aVF), the voltage criteria (largest
   limb and precordial QRS, Sokolow-Lyon), and per lead the R and S amplitudes, ST level at J + 60 ms,
   T and P amplitudes (mV).

Everything is deterministic and a pure function of its input. A record without detectable beats
(or with fewer than two) yields the same vector with the rhythm values set to their "no beats"
defaults, and ``MeasureResult.n_beats`` says so. Values are clipped to physiological ranges so
that one bad record cannot produce a huge feature.

The feature vector's order is :data:`FEATURE_NAMES`; it is part of the model (stored in the
checkpoint and the bundle manifest), so adding or reordering names needs a new model.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from diagecg.constants import CANONICAL_LEADS
from diagecg.types import F32Array

__all__ = [
    "FEATURE_NAMES",
    "LEAD_FEATURES",
    "MEASURE_TOKEN_EDGES",
    "REPORT_MEASUREMENTS",
    "MeasureResult",
    "measure",
    "measure_bins",
    "measure_features",
    "report_measurements",
    "summary_line",
]

RHYTHM_FEATURES: tuple[str, ...] = (
    "heart_rate_bpm",
    "n_beats",
    "rr_cv",
    "rr_rmssd_rel",
    "rr_pnn50",
    "rr_pdiff12",
    "rr_min_rel",
    "rr_max_rel",
)
INTERVAL_FEATURES: tuple[str, ...] = (
    "qrs_ms",
    "pr_ms",
    "qtc_ms",
    "axis_sin",
    "axis_cos",
    "p_ratio",
    "noise_mv",
)
# the numbers that define findings, derived from the median beat (voltage criteria, axis in degrees)
CRITERIA_FEATURES: tuple[str, ...] = (
    "axis_deg",  # frontal QRS axis, atan2(net aVF, net I), -180..180
    "limb_qrs_max_mv",  # the largest QRS peak-to-peak of the six limb leads (low voltage: < 0.5 mV)
    "precordial_qrs_max_mv",  # ... of V1-V6 (low voltage: < 1.0 mV)
    "sokolow_mv",  # S in V1 + the larger R of V5/V6 (Sokolow-Lyon; LVH: > 3.5 mV)
)
LEAD_FEATURES: tuple[str, ...] = ("r_mv", "s_mv", "st_mv", "t_mv", "p_mv")
FEATURE_NAMES: tuple[str, ...] = (
    *RHYTHM_FEATURES,
    *INTERVAL_FEATURES,
    *CRITERIA_FEATURES,
    *(f"{lead}.{f}" for f in LEAD_FEATURES for lead in CANONICAL_LEADS),
)

# Measurement tokens (diagecg.config.SummaryConfig.measure_tokens): the numbers a finding is defined
# by, each cut into bins at the clinical thresholds, so the LLM reads "heart rate 50-60" as one token.
# A value v falls in bin ``sum(v > edge)``.
MEASURE_TOKEN_EDGES: dict[str, tuple[float, ...]] = {
    "heart_rate_bpm": (40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0, 120.0, 150.0),  # brady < 60, tachy > 100
    "rr_cv": (0.03, 0.06, 0.09, 0.12, 0.16, 0.22, 0.30),  # irregular rhythm (AF)
    "pr_ms": (120.0, 140.0, 160.0, 180.0, 200.0, 220.0, 260.0),  # first degree AV block > 200
    "qrs_ms": (80.0, 90.0, 100.0, 110.0, 120.0, 130.0, 150.0),  # incomplete / complete BBB >= 110 / 120
    "qtc_ms": (360.0, 400.0, 420.0, 440.0, 460.0, 480.0, 500.0),  # long QT > 450-470
    "axis_deg": (-90.0, -45.0, -30.0, 0.0, 30.0, 60.0, 90.0, 120.0),  # LAD < -30, LAFB < -45, RAD > 90
    "limb_qrs_max_mv": (0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0),  # low voltage < 0.5
    "precordial_qrs_max_mv": (0.8, 1.0, 1.2, 1.5, 2.0, 3.0, 4.0),  # low voltage < 1.0
    "sokolow_mv": (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0),  # LVH > 3.5
}

REFRACTORY_S = 0.25  # no second QRS within this (up to 240 bpm)
INTEGRATION_S = 0.10  # moving-window integration of the QRS energy
THRESHOLD = 0.30  # of the 98th percentile of the energy
SEARCH_BACK_RR = 1.6  # gaps longer than this many median RRs are searched again at half threshold
BEAT_WINDOW_S = (-0.30, 0.50)  # median-beat window around the fiducial point
SLOPE_FRACTION = 0.15  # QRS on/offset: summed slope below this fraction of its peak
MAX_QRS_HALF_S = 0.12  # QRS onset/offset searched within this of the fiducial point
QRS_SLOPE_S = 0.01  # the QRS slope is averaged over this (1 sample at 100 Hz)
ALIGN_QRS_S = 0.06  # half-width of the QRS template that fiducial points are aligned on
ALIGN_S = 0.04  # fiducial points move by at most this to match the template
PEAK_SMOOTH_S = 0.04  # P and T peaks are found on the wave averaged over this
QRS_GAP_S = 0.008  # a dip of the slope shorter than this does not end the QRS (1 sample at 100 Hz)

# physiological clipping ranges: (low, high)
_CLIP: dict[str, tuple[float, float]] = {
    "heart_rate_bpm": (0.0, 300.0),
    "n_beats": (0.0, 60.0),
    "rr_cv": (0.0, 1.0),
    "rr_rmssd_rel": (0.0, 1.5),
    "rr_pnn50": (0.0, 1.0),
    "rr_pdiff12": (0.0, 1.0),
    "rr_min_rel": (0.0, 1.0),
    "rr_max_rel": (1.0, 4.0),
    "qrs_ms": (0.0, 240.0),
    "pr_ms": (0.0, 400.0),
    "qtc_ms": (0.0, 700.0),
    "axis_sin": (-1.0, 1.0),
    "axis_cos": (-1.0, 1.0),
    "p_ratio": (0.0, 2.0),
    "noise_mv": (0.0, 2.0),
    "axis_deg": (-180.0, 180.0),
    "limb_qrs_max_mv": (0.0, 8.0),
    "precordial_qrs_max_mv": (0.0, 8.0),
    "sokolow_mv": (0.0, 8.0),
}
_AMPLITUDE_CLIP_MV = 8.0


@dataclasses.dataclass(frozen=True)
class MeasureResult:
    """Measurements of one 12-lead signal.

    Attributes:
        features: float32 ``(len(FEATURE_NAMES),)``, in :data:`FEATURE_NAMES` order.
        beats: sample indices of the detected QRS complexes (fiducial points).
        median_beat: float32 ``(12, window)`` mV, baseline-corrected; zeros without beats.
        n_beats: ``len(beats)``.
    """

    features: F32Array
    beats: np.ndarray
    median_beat: F32Array
    n_beats: int


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along the last axis (same length, edges averaged over what exists)."""
    width = max(1, int(width))
    kernel = np.ones(width)
    num = np.convolve(x, kernel, mode="same")
    den = np.convolve(np.ones_like(x), kernel, mode="same")
    return num / den


def _local_peaks(e: np.ndarray, threshold: float, distance: int) -> np.ndarray:
    """Indices of local maxima of ``e`` above ``threshold``, greedily kept tallest-first
    ``distance`` samples apart."""
    if e.size < 3:
        return np.zeros(0, dtype=np.int64)
    inner = (e[1:-1] >= e[:-2]) & (e[1:-1] > e[2:]) & (e[1:-1] > threshold)
    cand = np.flatnonzero(inner) + 1
    if cand.size == 0:
        return cand.astype(np.int64)
    order = cand[np.argsort(-e[cand], kind="stable")]
    taken = np.zeros(e.size, dtype=bool)
    keep: list[int] = []
    for i in order:
        lo, hi = max(0, i - distance + 1), min(e.size, i + distance)
        if not taken[lo:hi].any():
            keep.append(int(i))
            taken[i] = True
    return np.array(sorted(keep), dtype=np.int64)


def detect_beats(x_mv: np.ndarray, fs_hz: float) -> np.ndarray:
    """QRS fiducial points of a (leads, n) mV signal; int64 sample indices, increasing."""
    slope = np.gradient(x_mv, axis=-1) * fs_hz  # (leads, n) mV/s
    energy = _moving_average((slope**2).sum(axis=0), round(INTEGRATION_S * fs_hz))  # (n,)
    ref = float(np.percentile(energy, 98))
    if not math.isfinite(ref) or ref <= 0:
        return np.zeros(0, dtype=np.int64)
    distance = max(1, round(REFRACTORY_S * fs_hz))
    peaks = _local_peaks(energy, THRESHOLD * ref, distance)
    if peaks.size >= 3:  # search back inside long gaps at half the threshold
        rr_med = float(np.median(np.diff(peaks)))
        extra: list[int] = []
        for a, b in zip(peaks[:-1], peaks[1:], strict=True):
            if b - a > SEARCH_BACK_RR * rr_med:
                lo, hi = a + distance, b - distance
                if hi > lo:
                    sub = _local_peaks(energy[lo:hi], 0.5 * THRESHOLD * ref, distance)
                    extra.extend(int(lo + s) for s in sub)
        if extra:
            peaks = np.unique(np.concatenate([peaks, np.array(extra, dtype=np.int64)]))
    # fiducial point: the steepest sample (summed |slope|) near each energy peak
    abs_slope = np.abs(slope).sum(axis=0)
    half = max(1, round(0.06 * fs_hz))
    fiducial = []
    for p in peaks:
        lo, hi = max(0, p - half), min(abs_slope.size, p + half + 1)
        fiducial.append(lo + int(np.argmax(abs_slope[lo:hi])))
    out = np.unique(np.array(fiducial, dtype=np.int64))
    if out.size > 1:  # two energy peaks can resolve to one fiducial point; keep the refractory gap
        keep = [int(out[0])]
        for p in out[1:]:
            if p - keep[-1] >= distance:
                keep.append(int(p))
        out = np.array(keep, dtype=np.int64)
    return out


def align_beats(x_mv: np.ndarray, beats: np.ndarray, fs_hz: float) -> np.ndarray:
    """Move each fiducial point to where its QRS best matches the median QRS (cross-correlation over
    all leads within +-ALIGN_S): the steepest sample of a QRS can jump between its up- and
    downstroke from beat to beat, and by more at low sampling rates. int64, increasing."""
    if beats.size < 3:
        return beats
    half, shift = round(ALIGN_QRS_S * fs_hz), round(ALIGN_S * fs_hz)
    n = x_mv.shape[-1]
    inside = beats[(beats - half - shift >= 0) & (beats + half + shift < n)]
    if inside.size < 3:
        return beats
    template = np.median(np.stack([x_mv[:, b - half : b + half + 1] for b in inside]), axis=0)
    template = template - template.mean(axis=-1, keepdims=True)
    out = beats.copy()
    for k, b in enumerate(beats):
        if not (b - half - shift >= 0 and b + half + shift < n):
            continue
        seg = x_mv[:, b - half - shift : b + half + shift + 1]
        scores = [
            float(
                (
                    template
                    * (
                        seg[:, d : d + 2 * half + 1]
                        - seg[:, d : d + 2 * half + 1].mean(axis=-1, keepdims=True)
                    )
                ).sum()
            )
            for d in range(2 * shift + 1)
        ]
        out[k] = b - shift + int(np.argmax(scores))
    return np.unique(out)


def _rhythm(beats: np.ndarray, fs_hz: float) -> dict[str, float]:
    if beats.size < 2:
        return {
            "heart_rate_bpm": 0.0,
            "n_beats": float(beats.size),
            "rr_cv": 0.0,
            "rr_rmssd_rel": 0.0,
            "rr_pnn50": 0.0,
            "rr_pdiff12": 0.0,
            "rr_min_rel": 1.0,
            "rr_max_rel": 1.0,
        }
    rr = np.diff(beats) / fs_hz  # (n-1,) s
    # the rate from the middle half of the RR intervals: as robust as the median to a missed or extra
    # beat, without its one-sample jitter (which made 100 and 500 Hz recordings differ by ~1 bpm)
    lo_q, hi_q = np.percentile(rr, [25, 75])
    mid = rr[(rr >= lo_q) & (rr <= hi_q)]
    med = float(mid.mean()) if mid.size else float(np.median(rr))
    d = np.abs(np.diff(rr))
    return {
        "heart_rate_bpm": 60.0 / med,
        "n_beats": float(beats.size),
        "rr_cv": float(rr.std() / rr.mean()),
        "rr_rmssd_rel": float(math.sqrt(float((d**2).mean())) / med) if d.size else 0.0,
        "rr_pnn50": float((d > 0.05).mean()) if d.size else 0.0,
        "rr_pdiff12": float((d > 0.125 * med).mean()) if d.size else 0.0,
        "rr_min_rel": float(rr.min() / med),
        "rr_max_rel": float(rr.max() / med),
    }


def _median_beat(x_mv: np.ndarray, beats: np.ndarray, fs_hz: float) -> tuple[np.ndarray, int]:
    """(leads, window) median beat and the fiducial's index in it; zeros when no beat fits."""
    lo, hi = round(BEAT_WINDOW_S[0] * fs_hz), round(BEAT_WINDOW_S[1] * fs_hz)
    width = hi - lo
    n = x_mv.shape[-1]
    inside = [(k, b) for k, b in enumerate(beats) if b + lo >= 0 and b + hi <= n]
    if not inside:
        return np.zeros((x_mv.shape[0], width)), -lo
    chosen = inside
    if beats.size >= 3:
        rr = np.diff(beats).astype(float)
        med = float(np.median(rr))
        regular = [(k, b) for k, b in inside if k > 0 and abs(rr[k - 1] - med) <= 0.2 * med]
        if len(regular) >= 3:
            chosen = regular
    stack = np.stack([x_mv[:, b + lo : b + hi] for _, b in chosen])  # (beats, leads, window)
    return np.median(stack, axis=0), -lo


def _intervals(mb: np.ndarray, r: int, fs_hz: float, heart_rate: float) -> dict[str, float]:
    """QRS on/offset, baseline-corrected amplitudes, intervals and axis of a median beat."""
    n_leads, width = mb.shape
    slope = np.abs(np.diff(mb, axis=-1)).sum(axis=0)  # (width-1,)
    # on one time scale at every rate: averaged over 10 ms (one sample at 100 Hz: unchanged there)
    slope = _moving_average(slope, round(QRS_SLOPE_S * fs_hz))
    peak = float(slope[max(0, r - 3) : r + 3].max()) if slope.size else 0.0
    limit = max(1, round(MAX_QRS_HALF_S * fs_hz))
    onset, offset = max(0, r - 1), min(width - 1, r + 1)
    if peak > 0:
        thr = SLOPE_FRACTION * peak
        # the walk ends where the slope stays below the threshold for QRS_GAP_S, not at the first
        # sample below it: at 500 Hz the summed slope dips to ~0 at the apex of an R wave that all
        # leads share, and stopping there halved the QRS (and took the baseline on its upstroke)
        gap = max(1, round(QRS_GAP_S * fs_hz))
        k = r - 1
        while k > max(0, r - limit) and slope[max(0, k - gap) : k].max() > thr:
            k -= 1
        onset = k
        k = r
        while k < min(width - 2, r + limit) and slope[k : k + gap].max() > thr:
            k += 1
        offset = k + 1
    ms = 1000.0 / fs_hz
    # baseline: the PR segment (up to 40 ms before the onset)
    b_lo, b_hi = max(0, onset - round(0.04 * fs_hz)), max(1, onset)
    baseline = mb[:, b_lo:b_hi].mean(axis=-1, keepdims=True)
    m = mb - baseline
    qrs = m[:, onset : offset + 1]
    r_amp, s_amp = qrs.max(axis=-1), qrs.min(axis=-1)
    st = m[:, min(width - 1, offset + round(0.06 * fs_hz))]
    t_lo, t_hi = min(width - 1, offset + round(0.08 * fs_hz)), min(width, offset + round(0.40 * fs_hz))
    t_seg = m[:, t_lo:t_hi] if t_hi > t_lo else m[:, -1:]
    # P and T peaks on the waves smoothed over 40 ms: the apex of a flat wave is otherwise decided
    # by noise, and moves with the sampling rate
    smooth = round(PEAK_SMOOTH_S * fs_hz)
    t_idx = np.abs(np.apply_along_axis(_moving_average, -1, t_seg, smooth)).argmax(axis=-1)
    t_amp = t_seg[np.arange(n_leads), t_idx]
    p_lo, p_hi = max(0, onset - round(0.24 * fs_hz)), max(1, onset - round(0.04 * fs_hz))
    p_seg = m[:, p_lo:p_hi] if p_hi > p_lo else m[:, :1]
    p_idx = np.abs(np.apply_along_axis(_moving_average, -1, p_seg, smooth)).argmax(axis=-1)
    p_amp = p_seg[np.arange(n_leads), p_idx]
    ii = CANONICAL_LEADS.index("II")
    pr_ms = (onset - (p_lo + int(p_idx[ii]))) * ms + 40.0  # P peak -> onset, + half a P wave
    # QT: onset -> T peak (lead with the largest T) + 40 ms, Bazett-corrected
    lead_t = int(np.abs(t_amp).argmax())
    qt_ms = (t_lo + int(t_idx[lead_t]) - onset) * ms + 40.0
    rr_s = 60.0 / heart_rate if heart_rate > 0 else 1.0
    net = qrs.sum(axis=-1)  # net QRS area per lead (mV * samples)
    i_, avf = CANONICAL_LEADS.index("I"), CANONICAL_LEADS.index("aVF")
    norm = math.hypot(float(net[i_]), float(net[avf]))
    axis_sin, axis_cos = (float(net[avf]) / norm, float(net[i_]) / norm) if norm > 0 else (0.0, 0.0)
    # P wave strength relative to the noise of the PR segment region, in lead II
    noise = float(np.std(np.diff(m[:, : max(2, p_lo)], axis=-1))) if p_lo >= 2 else 0.0
    p2p = r_amp - s_amp  # (leads,) QRS peak-to-peak
    at = {name: k for k, name in enumerate(CANONICAL_LEADS)}
    out = {
        "axis_deg": math.degrees(math.atan2(axis_sin, axis_cos)) if norm > 0 else 0.0,
        "limb_qrs_max_mv": float(p2p[:6].max()),
        "precordial_qrs_max_mv": float(p2p[6:].max()),
        "sokolow_mv": float(-s_amp[at["V1"]] + max(r_amp[at["V5"]], r_amp[at["V6"]])),
        "qrs_ms": (offset - onset) * ms,
        "pr_ms": pr_ms,
        "qtc_ms": qt_ms / math.sqrt(rr_s),
        "axis_sin": axis_sin,
        "axis_cos": axis_cos,
        "p_ratio": float(abs(p_amp[ii]) / max(1e-3, abs(r_amp[ii] - s_amp[ii]))),
        "noise_mv": noise,
    }
    for name, values in (("r_mv", r_amp), ("s_mv", s_amp), ("st_mv", st), ("t_mv", t_amp), ("p_mv", p_amp)):
        for lead, v in zip(CANONICAL_LEADS, values, strict=True):
            out[f"{lead}.{name}"] = float(v)
    return out


def measure(x_mv: np.ndarray, fs_hz: float) -> MeasureResult:
    """Measure a preprocessed 12-lead signal.

    Args:
        x_mv: float (12, samples) in mV, leads in ``CANONICAL_LEADS`` order, baseline-filtered
            (``diagecg.preprocess.prepare_signal``).
        fs_hz: its sampling rate in Hz.

    Returns:
        The features, beats and median beat.
    """
    x = np.asarray(x_mv, dtype=np.float64)
    assert x.ndim == 2 and x.shape[0] == len(CANONICAL_LEADS), f"expected (12, samples), got {x.shape}"
    beats = align_beats(x, detect_beats(x, fs_hz), fs_hz)
    values = _rhythm(beats, fs_hz)
    mb, r = _median_beat(x, beats, fs_hz)
    values.update(_intervals(mb, r, fs_hz, values["heart_rate_bpm"]))
    feats = np.empty(len(FEATURE_NAMES), dtype=np.float64)
    for k, name in enumerate(FEATURE_NAMES):
        v = values[name]
        v = v if math.isfinite(v) else 0.0
        lo, hi = _CLIP.get(name, (-_AMPLITUDE_CLIP_MV, _AMPLITUDE_CLIP_MV))
        feats[k] = min(max(v, lo), hi)
    return MeasureResult(
        features=feats.astype(np.float32),
        beats=beats,
        median_beat=mb.astype(np.float32),
        n_beats=int(beats.size),
    )


def measure_features(x_mv: np.ndarray, fs_hz: float) -> F32Array:
    """``measure(x_mv, fs_hz).features``: float32 (len(FEATURE_NAMES),)."""
    return measure(x_mv, fs_hz).features


def measure_bins(
    features: np.ndarray, names: tuple[str, ...], edges: tuple[tuple[float, ...], ...]
) -> np.ndarray:
    """Bin of each named measurement: int64 ``(..., len(names))``, ``sum(value > edge)`` per name.

    The same rule as the tokenizer's graph (``diagecg.nn.summary.MeasureBins``), for reading a
    measurement token back (evidence in answers) and for tests."""
    f = np.asarray(features)
    cols = [FEATURE_NAMES.index(n) for n in names]
    bins = [(f[..., c, None] > np.asarray(e)).sum(axis=-1) for c, e in zip(cols, edges, strict=True)]
    return np.stack(bins, axis=-1).astype(np.int64)


# the numbers a report prints, from the features the model reads (one definition of each measurement):
# name -> (unit, how it is derived); the keys and layout of diagecg.delineation.Measurements.to_dict()
REPORT_MEASUREMENTS: dict[str, tuple[str, str]] = {
    "heart_rate_bpm": ("bpm", "60 / mean of the middle half of the RR intervals (12-lead QRS energy beats)"),
    "rr_cv_percent": ("%", "std / mean of the RR intervals"),
    "rr_rmssd_ms": ("ms", "RMS of successive RR differences"),
    "pr_ms": ("ms", "lead II P peak (median beat) -> 12-lead QRS onset, + 40 ms"),
    "qrs_ms": ("ms", "12-lead summed slope of the median beat: QRS onset -> offset"),
    "qt_ms": ("ms", "QRS onset -> T peak of the lead with the largest T, + 40 ms"),
    "qtc_bazett_ms": ("ms", "QT / sqrt(RR in s), Bazett"),
    "qtc_fridericia_ms": ("ms", "QT / cbrt(RR in s), Fridericia"),
    "qrs_axis_deg": ("deg", "net QRS area of I and aVF on the median beat; atan2(2*aVF/sqrt(3), I)"),
}
MIN_REPORT_BEATS = 3  # rate and intervals need two RR intervals


def report_measurements(features: np.ndarray) -> dict[str, Any]:
    """The measurements a report prints, derived from one window's :data:`FEATURE_NAMES` vector: the
    same numbers the model reads as measurement tokens. ``{"n_beats", "peak_lead", "measurements":
    {name: {"value", "unit", "method", "reason"}}}`` (names of :data:`REPORT_MEASUREMENTS`), a value
    None with its reason where the window has too few beats."""
    f = dict(zip(FEATURE_NAMES, np.asarray(features, dtype=np.float64).tolist(), strict=True))
    n_beats = int(round(f["n_beats"]))
    hr = f["heart_rate_bpm"]
    values: dict[str, float | None] = dict.fromkeys(REPORT_MEASUREMENTS)
    if n_beats >= MIN_REPORT_BEATS and hr > 0:
        rr_s = 60.0 / hr
        qt_ms = f["qtc_ms"] * math.sqrt(rr_s)
        values.update(
            {
                "heart_rate_bpm": round(hr),
                "rr_cv_percent": round(100 * f["rr_cv"], 1),
                "rr_rmssd_ms": round(f["rr_rmssd_rel"] * rr_s * 1000),
                "pr_ms": round(f["pr_ms"]),
                "qrs_ms": round(f["qrs_ms"]),
                "qt_ms": round(qt_ms),
                "qtc_bazett_ms": round(f["qtc_ms"]),
                "qtc_fridericia_ms": round(qt_ms / rr_s ** (1 / 3)),
                "qrs_axis_deg": round(
                    math.degrees(math.atan2(2 * f["axis_sin"] / math.sqrt(3), f["axis_cos"]))
                ),
            }
        )
    reason = f"not measurable: {n_beats} beats detected in the window (at least {MIN_REPORT_BEATS} needed)"
    out: dict[str, Any] = {}
    for name, (unit, how) in REPORT_MEASUREMENTS.items():
        v = values[name]
        # "diagecg.measure" names this module by its former name: the answer JSON keeps it unchanged
        out[name] = {
            "value": None if v is None else float(v),
            "unit": unit,
            "method": f"diagecg.measure: {how}",
            "reason": None if v is not None else reason,
        }
    return {"n_beats": n_beats, "peak_lead": "", "measurements": out}


# how a report line prints each value: label, format
_SUMMARY: dict[str, tuple[str, str]] = {
    "heart_rate_bpm": ("HR", "{:.0f} bpm"),
    "rr_cv_percent": ("RR CV", "{:.1f}%"),
    "pr_ms": ("PR", "{:.0f} ms"),
    "qrs_ms": ("QRS", "{:.0f} ms"),
    "qt_ms": ("QT", "{:.0f} ms"),
    "qtc_bazett_ms": ("QTc (Bazett)", "{:.0f} ms"),
    "qrs_axis_deg": ("axis", "{:.0f}\u00b0"),
}


def summary_line(measurements: dict[str, Any]) -> str:
    """One line of :func:`report_measurements` (or of ``diagecg.delineation.Measurements.to_dict()``, the
    same layout) for people: ``"HR 64 bpm, RR CV 2.0%, PR 131 ms, ..., axis 22°"``; a value that could
    not be measured prints as ``n/m`` (its reason is in the JSON)."""
    values = measurements["measurements"]
    parts = []
    for name, (label, fmt) in _SUMMARY.items():
        value = values[name]["value"]
        parts.append(f"{label} {'n/m' if value is None else fmt.format(value)}")
    return "Measured: " + ", ".join(parts)

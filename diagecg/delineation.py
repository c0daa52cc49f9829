"""ECG intervals by neurokit2 P/QRS/T delineation: heart rate, RR irregularity, PR, QRS, QT/QTc, QRS axis.

An independent measurement of the numbers that :mod:`diagecg.features` computes in numpy (the ones the
model reads and a report prints); ``bench/intervals.py`` compares the two on PTB-XL. The product does not
use this module.

:func:`measure_intervals` measures a validated :class:`~diagecg.types.EcgRecord` the way a report
states it, one :class:`Measurement` per quantity with its unit, its method, and when it is None the
reason. neurokit2 (Makowski et al. 2021, doi:10.3758/s13428-020-01516-y; the ``delineation`` extra) does
the cleaning, the R peaks and the P/T delineation; the steps, and why each one was chosen, are:

1. **Cleaning**: ``nk.ecg_clean(method="neurokit")`` per lead (0.5 Hz high-pass, 50 Hz smoothing).
2. **R peaks**: ``nk.ecg_peaks(method="neurokit")`` on every non-flat lead; the lead whose beats agree
   best with the other leads' is used (lead II on a tie). One lead alone can lose beats where its QRS
   is small or odd (paced records); disagreement of every lead with the others means there are no QRS
   complexes (noise) and nothing is measured.
3. **QRS onset and offset**: not neurokit2. Its ``dwt`` QRS onset often lands on the P wave, its
   ``prominence`` bounds are those of the R wave alone, ``cwt`` finds bounds in few beats: none of them
   separates bundle branch blocks from normal QRS (``bench/intervals.py`` and its README). The QRS is measured
   instead as automated 12-lead programs define it, from the earliest onset to the latest offset over
   all leads: on the median beat (12 leads, aligned on the R peaks) the spatial velocity (sum over
   leads of |slope|) is above its median plus ``QRS_THRESHOLD`` of its peak excess.
4. **P onset and T offset**: ``nk.ecg_delineate(method="dwt")`` on lead II (the standard lead for P
   waves and QT), each point assigned to the beat whose QRS onset/offset it precedes/follows; PR and QT
   are medians over beats. A PR that varies between beats (median absolute deviation above
   ``PR_MAX_MAD_MS``) means no fixed P-QRS relation (atrial fibrillation: dwt marks a "P" in the
   fibrillatory waves of nearly every beat) and is not reported. Where lead II fails these checks V1 is
   tried for the P waves, and V5 where lead II's T ends are not found (``P_LEADS``, ``T_LEADS``): the
   usual leads for each, which leave fewer records without a QT and keep AFIB records without a PR
   (``bench/intervals.py`` reports how many of each group are left unmeasured).
5. **Frontal QRS axis**: the net QRS area (onset to offset, PR-segment baseline) of leads I and aVF per
   beat, averaged over beats; ``atan2(2 * aVF / sqrt(3), I)``: Goldberger's aVF = (II + III) / 2 is
   sqrt(3)/2 of the frontal vector's vertical component, while lead I is its horizontal component.

A value outside ``PLAUSIBLE`` becomes None with the reason; so does every value a failed neurokit2
call (its message quoted) or too few beats leaves unmeasurable. :func:`measure_intervals` never raises
on a valid record (except :class:`~diagecg.errors.SignalFileError` when neurokit2 is not installed),
and is a deterministic function of the signal. neurokit2's warnings are silenced inside the call only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from diagecg.constants import CANONICAL_LEADS
from diagecg.formats import import_optional
from diagecg.types import EcgRecord

__all__ = [
    "MEASUREMENT_NAMES",
    "METHODS",
    "PLAUSIBLE",
    "UNITS",
    "Measurement",
    "Measurements",
    "measure_intervals",
]

# name -> unit; the keys of Measurements.to_dict()["measurements"], in this order
UNITS: dict[str, str] = {
    "heart_rate_bpm": "bpm",  # 60 / mean RR
    "rr_cv_percent": "%",  # coefficient of variation of the RR intervals: std / mean * 100
    "rr_rmssd_ms": "ms",  # root mean square of successive RR differences
    "pr_ms": "ms",  # P onset (lead II, else V1) -> QRS onset
    "qrs_ms": "ms",  # global QRS onset -> offset (12 leads)
    "qt_ms": "ms",  # QRS onset -> T offset (lead II, else V5)
    "qtc_bazett_ms": "ms",  # QT / sqrt(RR in s)
    "qtc_fridericia_ms": "ms",  # QT / cbrt(RR in s)
    "qrs_axis_deg": "deg",  # frontal plane, -180..180; normal -30..90
}
MEASUREMENT_NAMES: tuple[str, ...] = tuple(UNITS)
# physiological range of each value; outside it, the value is a measurement error and becomes None
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "heart_rate_bpm": (20.0, 300.0),
    "rr_cv_percent": (0.0, 100.0),
    "rr_rmssd_ms": (0.0, 2000.0),
    "pr_ms": (60.0, 400.0),
    "qrs_ms": (40.0, 250.0),
    "qt_ms": (200.0, 700.0),
    "qtc_bazett_ms": (200.0, 800.0),
    "qtc_fridericia_ms": (200.0, 800.0),
    "qrs_axis_deg": (-180.0, 180.0),
}
_DECIMALS: dict[str, int] = {"rr_cv_percent": 1}  # everything else to whole units, as reports print them

MIN_BEATS = 3  # rate and intervals: at least two RR intervals
MIN_BEATS_VARIABILITY = 5  # RR irregularity: at least four RR intervals
FLAT_STD_MV = 0.005  # a lead whose std over the record is below this is flat (QualityConfig.flat_std_mv)
MATCH_TOLERANCE_S = 0.10  # an R peak of one lead matches one of another lead within this
MIN_LEAD_AGREEMENT = 0.6  # best lead's mean F1 with the better half of the others; below: no QRS
# the R-peak lead: the best agreeing one, the first of PEAK_LEAD_PREFERENCE on a tie. Preferring lead II
# within a margin (0.02) cost accuracy: where it has one beat more than the best lead, it is nearly always
# a false one (a T wave, the record's last sample)
BEAT_WINDOW_S = (0.30, 0.45)  # median beat: this much before and after each R peak
QRS_THRESHOLD = 0.05  # of the spatial velocity's peak above its median (tuned on PTB-XL: bench/intervals.py)
QRS_SEARCH_S = 0.08  # the spatial velocity peak lies within this of the R peak
QRS_MAX_HALF_S = 0.15  # QRS onset/offset within this of the velocity peak
SMOOTH_S = 0.01  # spatial velocity averaged over this
BASELINE_S = 0.02  # axis: baseline from this much of the PR segment before QRS onset
P_SEARCH_S = 0.45  # P onset searched this far before QRS onset (PR up to 400 ms + margin)
P_MIN_GAP_S = 0.02  # ... and at least this before it
T_MIN_GAP_S = 0.08  # T offset searched from this after QRS offset ...
T_SEARCH_S = 0.80  # ... up to this after the R peak (or the next R peak)
MIN_FOUND_FRACTION = 0.5  # P onset / T offset must be found in more than this share of beats
PR_MAX_MAD_MS = 15.0  # PR median absolute deviation over beats; above: no fixed P-QRS relation
P_LEADS: tuple[str, ...] = ("II", "V1")  # PR: lead II, else V1 (where P waves are largest)
T_LEADS: tuple[str, ...] = ("II", "V5")  # QT: lead II, else V5 (the usual QT leads)
PEAK_LEAD_PREFERENCE: tuple[str, ...] = ("II", *(lead for lead in CANONICAL_LEADS if lead != "II"))

# how each value is measured; {peaks}: the R-peak lead, {lead}: the delineated lead of this record
METHODS: dict[str, str] = {
    "heart_rate_bpm": "neurokit2 ecg_peaks lead {peaks}; 60 / mean RR",
    "rr_cv_percent": "neurokit2 ecg_peaks lead {peaks}; std / mean of RR",
    "rr_rmssd_ms": "neurokit2 ecg_peaks lead {peaks}; RMSSD of RR",
    "pr_ms": "neurokit2 ecg_delineate(dwt) lead {lead} P onset -> 12-lead QRS onset; median over beats",
    "qrs_ms": "12-lead spatial velocity of the median beat; QRS onset -> offset",
    "qt_ms": "12-lead QRS onset -> neurokit2 ecg_delineate(dwt) lead {lead} T offset; median over beats",
    "qtc_bazett_ms": "QT (lead {lead}) / sqrt(mean RR in s), Bazett",
    "qtc_fridericia_ms": "QT (lead {lead}) / cbrt(mean RR in s), Fridericia",
    "qrs_axis_deg": "net QRS area of I and aVF, mean over beats; atan2(2*aVF/sqrt(3), I)",
}


@dataclass(frozen=True)
class Measurement:
    """One measured quantity.

    Attributes:
        name: one of ``MEASUREMENT_NAMES``.
        value: rounded (whole units; RR CV to 0.1 %), or None when not measurable.
        unit: ``UNITS[name]``.
        method: library, function, lead(s) and statistic, in one short string.
        reason: why ``value`` is None; None when it is not.
    """

    name: str
    value: float | None
    unit: str
    method: str
    reason: str | None = None

    def __post_init__(self) -> None:
        assert (self.value is None) != (self.reason is None), (
            f"{self.name}: exactly one of value ({self.value}) and reason ({self.reason!r}) must be set"
        )

    def to_dict(self) -> dict[str, Any]:
        """``{"value", "unit", "method", "reason"}``: JSON-ready (value a float or None)."""
        return {"value": self.value, "unit": self.unit, "method": self.method, "reason": self.reason}


@dataclass(frozen=True)
class Measurements:
    """The measurements of one record, in ``MEASUREMENT_NAMES`` order.

    Attributes:
        items: one Measurement per name of ``MEASUREMENT_NAMES``.
        n_beats: R peaks detected.
        peak_lead: the lead the R peaks come from ("" when none).
    """

    items: tuple[Measurement, ...]
    n_beats: int
    peak_lead: str

    def __post_init__(self) -> None:
        assert tuple(m.name for m in self.items) == MEASUREMENT_NAMES, [m.name for m in self.items]

    def __iter__(self) -> Iterator[Measurement]:
        return iter(self.items)

    def __getitem__(self, name: str) -> Measurement:
        for m in self.items:
            if m.name == name:
                return m
        raise KeyError(f"no measurement {name!r}; known: {list(MEASUREMENT_NAMES)}")

    def values(self) -> dict[str, float | None]:
        """name -> value (None when not measurable)."""
        return {m.name: m.value for m in self.items}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"n_beats": int, "peak_lead": str, "measurements": {name: {"value": float | None,
        "unit": str, "method": str, "reason": str | None}}}``, names as in ``MEASUREMENT_NAMES``."""
        return {
            "n_beats": self.n_beats,
            "peak_lead": self.peak_lead,
            "measurements": {m.name: m.to_dict() for m in self.items},
        }


class _Builder:
    """Collects one value or reason per name, applies the plausibility gates and rounds."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.reasons: dict[str, str] = {}
        self.methods: dict[str, str] = {}

    @staticmethod
    def problem(name: str, value: float) -> str | None:
        """Why ``value`` cannot be reported as ``name`` (not finite, outside ``PLAUSIBLE``), or None."""
        low, high = PLAUSIBLE[name]
        if not math.isfinite(value):
            return "not measurable: the computation gave no finite value"
        if not low <= value <= high:
            return (
                f"implausible: {value:.4g} {UNITS[name]} is outside {low:g}-{high:g} {UNITS[name]} "
                f"(a measurement error)"
            )
        return None

    def set(self, name: str, value: float, method: str) -> None:
        self.methods[name] = method
        problem = self.problem(name, value)
        if problem:
            self.reasons[name] = problem
        else:
            self.values[name] = value

    def fail(self, names: tuple[str, ...] | list[str], reason: str) -> None:
        for name in names:
            if name not in self.values and name not in self.reasons:
                self.reasons[name] = reason

    def build(self, n_beats: int, peak_lead: str) -> Measurements:
        items = []
        for name in MEASUREMENT_NAMES:
            method = self.methods.get(name) or METHODS[name].format(peaks=peak_lead or "?", lead=P_LEADS[0])
            if name in self.values:
                value = round(self.values[name], _DECIMALS.get(name, 0)) + 0.0  # -0.0 -> 0.0
                items.append(Measurement(name, float(value), UNITS[name], method))
            else:
                reason = self.reasons.get(name, "not measurable")
                items.append(Measurement(name, None, UNITS[name], method, reason))
        return Measurements(items=tuple(items), n_beats=n_beats, peak_lead=peak_lead)


def _match_f1(a: np.ndarray, b: np.ndarray, tolerance: int) -> float:
    """F1 of matching two sorted peak lists one to one within ``tolerance`` samples."""
    if a.size == 0 or b.size == 0:
        return 0.0
    i = j = matched = 0
    while i < a.size and j < b.size:
        if abs(int(a[i]) - int(b[j])) <= tolerance:
            matched += 1
            i += 1
            j += 1
        elif a[i] < b[j]:
            i += 1
        else:
            j += 1
    return 2.0 * matched / (a.size + b.size)


def _choose_peaks(peaks: dict[str, np.ndarray], fs_hz: float) -> tuple[str, float]:
    """The lead whose peaks agree best with the other leads', and that agreement: the mean F1 of its
    matches with the better half of the other leads (a lead where neurokit2 finds nearly no beat, as in
    6 leads of a PTB-XL CLBBB record at 100 Hz, does not drag down the leads that agree)."""
    tolerance = round(MATCH_TOLERANCE_S * fs_hz)
    leads = [lead for lead in PEAK_LEAD_PREFERENCE if lead in peaks]
    if len(leads) == 1:
        return leads[0], 1.0  # nothing to compare with (degraded record with one lead left)
    scores = {}
    for a in leads:
        f1 = sorted((_match_f1(peaks[a], peaks[b], tolerance) for b in leads if b != a), reverse=True)
        scores[a] = float(np.mean(f1[: max(1, len(f1) // 2)]))
    best = max(leads, key=lambda lead: scores[lead])  # the first in preference order on a tie
    return best, scores[best]


def _snap(r: np.ndarray, own: np.ndarray | None, tolerance: int) -> np.ndarray:
    """Each beat of ``r`` moved to the nearest of ``own`` (a lead's own R peaks) within ``tolerance``."""
    if own is None or own.size == 0:
        return r
    j = np.clip(np.searchsorted(own, r), 1, own.size) - 1  # (beats,) own peak at or before each beat
    candidates = np.stack([own[j], own[np.minimum(j + 1, own.size - 1)]])  # (2, beats)
    nearest = candidates[np.argmin(np.abs(candidates - r), axis=0), np.arange(r.size)]
    return np.where(np.abs(nearest - r) <= tolerance, nearest, r)


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    if width <= 1:
        return x
    return np.convolve(x, np.ones(width) / width, mode="same")


def _crossing(v: np.ndarray, thr: float, start: int, step: int, limit: int) -> float:
    """Walk from ``start`` by ``step`` while ``v`` is above ``thr`` (at most ``limit`` samples); the
    fractional index where it falls below, linearly interpolated."""
    k = start
    end = start + step * limit
    while 0 <= k + step < v.size and k != end and v[k + step] > thr:
        k += step
    nxt = k + step
    if not 0 <= nxt < v.size or v[k] <= thr:
        return float(k)
    return k + step * (v[k] - thr) / (v[k] - v[nxt])


def _qrs_bounds(beat: np.ndarray, centre: int, fs_hz: float) -> tuple[float, float]:
    """Global QRS onset and offset of a (12, window) median beat, fractional samples of the window."""
    velocity = np.abs(np.diff(beat, axis=1)).sum(axis=0) * fs_hz  # (window - 1,) mV/s; v[k]: k -> k+1
    velocity = _smooth(velocity, round(SMOOTH_S * fs_hz))
    search = max(1, round(QRS_SEARCH_S * fs_hz))
    lo, hi = max(0, centre - search), min(velocity.size, centre + search + 1)
    peak = lo + int(np.argmax(velocity[lo:hi]))
    floor = float(np.median(velocity))
    thr = floor + QRS_THRESHOLD * (float(velocity[peak]) - floor)
    limit = round(QRS_MAX_HALF_S * fs_hz)
    # velocity[k] is the slope between samples k and k+1: the onset is the sample where it rises, the
    # offset the sample after it falls
    onset = _crossing(velocity, thr, peak, -1, limit) + 0.5
    offset = _crossing(velocity, thr, peak, +1, limit) + 0.5
    return onset, offset


def _assign(points: Any, lo: np.ndarray, hi: np.ndarray, last: bool) -> np.ndarray:
    """Per beat, the last (or first) finite point inside (lo, hi); NaN where none is."""
    p = np.asarray(points, dtype=float).ravel()
    p = np.sort(p[np.isfinite(p)])
    out = np.full(lo.shape, np.nan)
    for k, (a, b) in enumerate(zip(lo, hi, strict=True)):
        inside = p[(p > a) & (p < b)]
        if inside.size:
            out[k] = inside[-1] if last else inside[0]
    return out


def _nk_error(what: str, e: Exception) -> str:
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"not measurable: neurokit2 {what} failed ({type(e).__name__}: {message[:200]})"


def measure_intervals(record: EcgRecord) -> Measurements:
    """Measure rate, rhythm, intervals and the frontal QRS axis of a record (module docstring).

    Args:
        record: a validated EcgRecord: ``signal`` float32 mV, shape (12, samples), leads in
            ``CANONICAL_LEADS`` order; ``fs_hz`` its sampling rate (any; PTB-XL's 100 and 500 Hz checked).

    Returns:
        One Measurement per name of ``MEASUREMENT_NAMES``; None values carry the reason.

    Raises:
        SignalFileError: neurokit2 is not installed (``pip install 'diagecg[delineation]'``).
    """
    nk = import_optional(
        "neurokit2", "delineation", "ECG measurements", record.source or record.record_id or "<record>"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # neurokit2 warns on every short or odd signal; reasons say it
        with np.errstate(all="ignore"):
            return _measure(nk, record)


def _measure(nk: ModuleType, record: EcgRecord) -> Measurements:
    fs = float(record.fs_hz)
    x = np.asarray(record.signal, dtype=np.float64)
    assert x.shape[0] == len(CANONICAL_LEADS), f"expected (12, samples), got {x.shape}"
    b = _Builder()
    everything = list(MEASUREMENT_NAMES)
    rate: float = int(round(fs)) if fs == round(fs) else fs  # neurokit2 slices with fs * seconds

    # 1. cleaning, per non-flat lead
    clean: dict[str, np.ndarray] = {}
    error = ""
    for lead, row in zip(CANONICAL_LEADS, x, strict=True):
        if float(row.std()) < FLAT_STD_MV:
            continue
        try:
            clean[lead] = np.asarray(nk.ecg_clean(row, sampling_rate=rate, method="neurokit"), dtype=float)
        except Exception as e:  # noqa: BLE001 - any neurokit2 failure makes the values unmeasurable
            error = error or _nk_error("ecg_clean", e)
    if not clean:
        b.fail(everything, error or "not measurable: every lead is flat")
        return b.build(0, "")
    # 2. R peaks per lead; the lead that agrees best with the others
    peaks: dict[str, np.ndarray] = {}
    for lead, sig in clean.items():
        try:
            _, info = nk.ecg_peaks(sig, sampling_rate=rate, method="neurokit")
            r = np.unique(np.asarray(info["ECG_R_Peaks"], dtype=float))
            peaks[lead] = r[np.isfinite(r)].astype(np.int64)
        except Exception as e:  # noqa: BLE001
            error = error or _nk_error("ecg_peaks", e)
    if not peaks:
        b.fail(everything, error)
        return b.build(0, "")
    peak_lead, agreement = _choose_peaks(peaks, fs)
    r = peaks[peak_lead]
    if agreement < MIN_LEAD_AGREEMENT:
        b.fail(
            everything,
            f"not measurable: no QRS complexes consistent across leads (best lead {peak_lead} "
            f"agrees {agreement:.0%} with the others; noise?)",
        )
        return b.build(int(r.size), peak_lead)
    if r.size < MIN_BEATS:
        b.fail(everything, f"not measurable: fewer than {MIN_BEATS} beats detected ({r.size})")
        return b.build(int(r.size), peak_lead)

    # rhythm
    rr_ms = np.diff(r) * 1000.0 / fs  # (beats - 1,)
    b.set("heart_rate_bpm", 60000.0 / float(rr_ms.mean()), METHODS["heart_rate_bpm"].format(peaks=peak_lead))
    if r.size >= MIN_BEATS_VARIABILITY:
        b.set(
            "rr_cv_percent",
            100.0 * float(rr_ms.std() / rr_ms.mean()),
            METHODS["rr_cv_percent"].format(peaks=peak_lead),
        )
        b.set(
            "rr_rmssd_ms",
            float(np.sqrt(np.mean(np.diff(rr_ms) ** 2))),
            METHODS["rr_rmssd_ms"].format(peaks=peak_lead),
        )
    else:
        b.fail(
            ("rr_cv_percent", "rr_rmssd_ms"),
            f"not measurable: {r.size - 1} RR intervals; RR "
            f"irregularity needs at least {MIN_BEATS_VARIABILITY - 1}",
        )
    if "heart_rate_bpm" not in b.values:  # the beats are wrong, and so would be everything below
        b.fail(everything, "not measurable: the detected beats give an implausible heart rate")
        return b.build(int(r.size), peak_lead)

    # 3. global QRS bounds on the median beat
    pre, post = round(BEAT_WINDOW_S[0] * fs), round(BEAT_WINDOW_S[1] * fs)
    inside = r[(r - pre >= 0) & (r + post <= x.shape[1])]
    if inside.size == 0:
        b.fail(
            everything,
            f"not measurable: no beat has {BEAT_WINDOW_S[0]:g} s before and "
            f"{BEAT_WINDOW_S[1]:g} s after its R peak inside the record",
        )
        return b.build(int(r.size), peak_lead)
    stack = np.zeros((inside.size, len(CANONICAL_LEADS), pre + post))  # (beats, 12, window); flat leads 0
    for k, lead in enumerate(CANONICAL_LEADS):
        if lead in clean:
            for j, peak in enumerate(inside):
                stack[j, k] = clean[lead][peak - pre : peak + post]
    onset, offset = _qrs_bounds(np.median(stack, axis=0), pre, fs)  # fractional samples of the window
    b.set("qrs_ms", (offset - onset) * 1000.0 / fs, METHODS["qrs_ms"])
    if "qrs_ms" not in b.values:  # PR, QT and the axis start or end at these bounds
        b.fail(
            everything, "not measurable: the QRS onset and offset are not (the QRS duration is implausible)"
        )
        return b.build(int(r.size), peak_lead)
    # 5. axis
    _axis(b, clean, inside, onset - pre, offset - pre, fs)
    # 4. P onset and T offset, per beat (fractional samples of the record)
    beats = _Beats(nk, clean, peaks, r, r + (onset - pre), r + (offset - pre), rate)
    _pr(b, beats)
    _qt(b, beats, float(rr_ms.mean()) / 1000.0)
    return b.build(int(r.size), peak_lead)


class _Beats:
    """The beats of one record and neurokit2's dwt delineation of each lead, computed once when asked."""

    def __init__(
        self,
        nk: ModuleType,
        clean: dict[str, np.ndarray],
        peaks: dict[str, np.ndarray],
        r: np.ndarray,
        qrs_on: np.ndarray,
        qrs_off: np.ndarray,
        rate: float,
    ) -> None:
        self.nk, self.clean, self.peaks, self.rate, self.fs = nk, clean, peaks, rate, float(rate)
        self.r, self.qrs_on, self.qrs_off = r, qrs_on, qrs_off  # (beats,) samples of the record
        self._waves: dict[str, dict[str, Any] | str] = {}

    def waves(self, lead: str) -> dict[str, Any] | str:
        """``nk.ecg_delineate(method="dwt")``'s points of ``lead``, or why there are none."""
        if lead not in self._waves:
            if lead not in self.clean:
                self._waves[lead] = "flat"
            else:
                # dwt searches P and T relative to the R peaks it is given: this lead's own, where it has them
                r = _snap(self.r, self.peaks.get(lead), round(MATCH_TOLERANCE_S * self.fs))
                try:
                    _, waves = self.nk.ecg_delineate(
                        self.clean[lead], r, sampling_rate=self.rate, method="dwt"
                    )
                    self._waves[lead] = dict(waves)
                except Exception as e:  # noqa: BLE001
                    self._waves[lead] = _nk_error("ecg_delineate", e).removeprefix("not measurable: ")
        return self._waves[lead]


def _axis(
    b: _Builder, clean: dict[str, np.ndarray], beats: np.ndarray, on: float, off: float, fs: float
) -> None:
    """Net QRS area of I and aVF per beat (``on``/``off``: samples from the R peak), mean over beats."""
    if "I" not in clean or "aVF" not in clean:
        flat = [lead for lead in ("I", "aVF") if lead not in clean]
        b.fail(("qrs_axis_deg",), f"not measurable: lead(s) {', '.join(flat)} flat")
        return
    base = max(1, round(BASELINE_S * fs))
    lo, hi = math.floor(on), math.ceil(off)
    areas = []  # (beats, 2) mV * s of I, aVF
    for peak in beats:
        a, z = int(peak) + lo, int(peak) + hi + 1
        if a - base >= 0 and z <= clean["I"].size:
            areas.append(
                [
                    float((clean[lead][a:z] - clean[lead][a - base : a].mean()).sum() / fs)
                    for lead in ("I", "aVF")
                ]
            )
    if not areas:
        b.fail(("qrs_axis_deg",), "not measurable: no complete QRS inside the record")
        return
    area_i, area_avf = np.mean(np.asarray(areas), axis=0)
    if math.hypot(area_i, area_avf) == 0.0:
        b.fail(("qrs_axis_deg",), "not measurable: zero net QRS area in I and aVF")
        return
    b.set(
        "qrs_axis_deg",
        math.degrees(math.atan2(2.0 * area_avf / math.sqrt(3.0), area_i)),
        METHODS["qrs_axis_deg"],
    )


def _pr(b: _Builder, beats: _Beats) -> None:
    """PR: P onset of each beat in lead II, else V1 -> QRS onset; median over beats."""
    fs, why = beats.fs, []
    fibrillation = False
    for lead in P_LEADS:
        waves = beats.waves(lead)
        if isinstance(waves, str):
            why.append(f"lead {lead}: {waves}")
            continue
        p_on = _assign(
            waves.get("ECG_P_Onsets", []),
            beats.qrs_on - P_SEARCH_S * fs,
            beats.qrs_on - P_MIN_GAP_S * fs,
            last=True,
        )
        if np.isfinite(p_on).mean() <= MIN_FOUND_FRACTION:
            why.append(f"lead {lead}: P waves not found in >{MIN_FOUND_FRACTION:.0%} of beats")
            fibrillation = True
            continue
        pr = (beats.qrs_on - p_on)[np.isfinite(p_on)] * 1000.0 / fs  # (beats with a P,) ms
        median = float(np.median(pr))
        mad = float(np.median(np.abs(pr - median)))
        max_mad = max(PR_MAX_MAD_MS, 1000.0 / fs)  # one sample at least (a 50 Hz record)
        if mad > max_mad:
            why.append(
                f"lead {lead}: the PR interval varies between beats (median absolute deviation "
                f"{mad:.0f} ms > {max_mad:g} ms)"
            )
            fibrillation = True
            continue
        problem = b.problem("pr_ms", median)
        if problem:
            why.append(f"lead {lead}: {problem.removeprefix('not measurable: ')}")
            continue
        b.set("pr_ms", median, METHODS["pr_ms"].format(lead=lead))
        return
    hint = (
        ": no P waves with a fixed relation to the QRS (atrial fibrillation or flutter?)"
        if fibrillation
        else ""
    )
    b.fail(("pr_ms",), f"not measurable: {'; '.join(why)}{hint}")


def _qt(b: _Builder, beats: _Beats, rr_s: float) -> None:
    """QT: QRS onset -> T offset of each beat in lead II, else V5; median over beats; QTc with mean RR."""
    fs, why = beats.fs, []
    names = ("qt_ms", "qtc_bazett_ms", "qtc_fridericia_ms")
    next_r = np.append(beats.r[1:], np.inf).astype(float)
    for lead in T_LEADS:
        waves = beats.waves(lead)
        if isinstance(waves, str):
            why.append(f"lead {lead}: {waves}")
            continue
        t_off = _assign(
            waves.get("ECG_T_Offsets", []),
            beats.qrs_off + T_MIN_GAP_S * fs,
            np.minimum(next_r, beats.r + T_SEARCH_S * fs),
            last=False,
        )
        if np.isfinite(t_off).mean() <= MIN_FOUND_FRACTION:
            why.append(f"lead {lead}: T wave end not found in >{MIN_FOUND_FRACTION:.0%} of beats")
            continue
        qt = float(np.median((t_off - beats.qrs_on)[np.isfinite(t_off)])) * 1000.0 / fs
        problem = b.problem("qt_ms", qt)
        if problem:
            why.append(f"lead {lead}: {problem.removeprefix('not measurable: ')}")
            continue
        b.set("qt_ms", qt, METHODS["qt_ms"].format(lead=lead))
        b.set("qtc_bazett_ms", qt / math.sqrt(rr_s), METHODS["qtc_bazett_ms"].format(lead=lead))
        b.set("qtc_fridericia_ms", qt / rr_s ** (1.0 / 3.0), METHODS["qtc_fridericia_ms"].format(lead=lead))
        return
    b.fail(names, f"not measurable: {'; '.join(why)}")

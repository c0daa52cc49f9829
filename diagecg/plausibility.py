"""Plausibility checks a cardiologist's eye makes before reading a 12-lead ECG (thresholds in
``QualityConfig``; the margins against every real record the project has: README).

``diagecg.quality`` first refuses what is not an ECG at all (noise, a sine, copied leads, broken limb-lead
relations). What is left can still be an ECG recorded or stored wrongly, which a model answers as
confidently as a good one. Each check below measures one such fault on a 10 s window and gives a
:class:`Finding`: a refusal when the fault is certain and no answer could be right, else a warning with
its own code (``diagecg.notes``), which the answer carries:

* **limb electrodes** (``LIMB_LEADS_REVERSED``): P, QRS and T negative in lead I and positive in aVR
  means the left and right arm electrodes are swapped (or dextrocardia); negative in lead II too means
  every lead is inverted. Einthoven's relations still hold, so the lead-relation check cannot see it.
* **rate against waveform** (``RATE_CONTRADICTS_WAVEFORM``): a header whose sampling rate is wrong stretches
  or squeezes every wave: QRS complexes of 200+ ms at a rate under 30 bpm, a slope spectrum centred at
  a few Hz, or QRS narrower than any heart makes.
* **amplitude** (``AMPLITUDE_IMPLAUSIBLE``): the largest QRS of the 12 leads (peak to peak of the median
  beat) outside what hearts produce.
* **time order** (``TIME_REVERSED``): the large slow wave (T) comes after the QRS and the small one (P)
  before it; a record played backwards has them the other way round.
* **repetition** (``SIGNAL_REPEATS``): one segment copied over and over (beat to beat, a real ECG always
  differs: respiration, noise), including a synthetic beat train whose complexes are identical.
* **single leads** (``LEAD_NOISE``): a lead whose beats do not resemble each other nor concentrate their
  energy at the QRS complexes the other leads show (noise instead of an ECG), or with dropouts (samples
  jumping to one repeated value, or held constant for longer than any real trace is).

A representative (median) beat stored as if it were the rhythm is refused by the readers (HL7 aECG) and,
tiled to a rhythm's length, by the repetition check.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from diagecg.config import QualityConfig
from diagecg.constants import CANONICAL_LEADS
from diagecg.dsp import butter_filtfilt
from diagecg.features import FEATURE_NAMES, measure

__all__ = ["CHECKS", "Finding", "assess", "findings", "note_code", "window_metrics"]

LEAD = {name: k for k, name in enumerate(CANONICAL_LEADS)}
# check name -> the warning code its findings carry (diagecg.notes.W)
CHECKS: dict[str, str] = {
    "limb_leads": "LIMB_LEADS_REVERSED",
    "rate": "RATE_CONTRADICTS_WAVEFORM",
    "amplitude": "AMPLITUDE_IMPLAUSIBLE",
    "time_order": "TIME_REVERSED",
    "repetition": "SIGNAL_REPEATS",
    "lead_noise": "LEAD_NOISE",
}
QRS_HALF_S = 0.06  # the QRS of a median beat lies within this of its fiducial point
FLANK_S = (0.1, 0.45)  # P and T are looked for this far before / after the fiducial point (at most 0.45 RR)
SPECTRUM_BAND_HZ = (0.5, 45.0)  # the slope spectrum's centroid is taken in this band (every rate >= 100 Hz)
MIN_REPEAT_LAG_S = 0.25  # repetition is looked for at lags from this ...
MIN_REPEAT_OVERLAP_S = 2.0  # ... as long as the copies overlap this much


@dataclasses.dataclass(frozen=True)
class Finding:
    """One failed plausibility check of a window: ``check`` (a key of :data:`CHECKS`), whether the record
    must be refused, and one line saying what was measured."""

    check: str
    refuse: bool
    message: str

    @property
    def code(self) -> str:
        return CHECKS[self.check]


def _bandpass(x: np.ndarray, fs_hz: float) -> np.ndarray:
    y = butter_filtfilt(x, 2, 0.5, "highpass", fs_hz)
    return butter_filtfilt(y, 2, min(40.0, fs_hz / 2.5), "lowpass", fs_hz)


def _segments(y: np.ndarray, beats: np.ndarray, before: int, after: int) -> np.ndarray:
    """(beats, leads, before + after + 1) windows around the beats that fit."""
    n = y.shape[1]
    inside = [b for b in beats if b - before >= 0 and b + after < n]
    if not inside:
        return np.zeros((0, y.shape[0], before + after + 1))
    return np.stack([y[:, b - before : b + after + 1] for b in inside])


def _repetition(x: np.ndarray, fs_hz: float) -> tuple[float, float]:
    """min over lags of ||x[t + lag] - x[t]||^2 / (||x[t + lag]||^2 + ||x[t]||^2) (0: an exact copy; ~1:
    unrelated), summed over leads and the overlap; and that lag in s."""
    x = x - x.mean(axis=1, keepdims=True)
    n = x.shape[1]
    lo, hi = round(MIN_REPEAT_LAG_S * fs_hz), n - round(MIN_REPEAT_OVERLAP_S * fs_hz)
    if hi <= lo:
        return 1.0, 0.0
    n_fft = 1 << int(math.ceil(math.log2(2 * n)))
    spec = np.fft.rfft(x, n_fft, axis=1)
    corr = np.fft.irfft(spec * spec.conj(), n_fft, axis=1)[:, :n].sum(axis=0)  # sum_t x[t] . x[t + lag]
    energy = np.concatenate([[0.0], np.cumsum((x**2).sum(axis=0))])
    lags = np.arange(lo, hi)
    both = energy[n - lags] + (energy[n] - energy[lags])  # the two overlapping parts' energies
    r = 1.0 - 2.0 * corr[lo:hi] / np.maximum(both, 1e-30)
    k = int(np.argmin(r))
    return float(r[k]), float(lags[k] / fs_hz)


def _slope_centroid_hz(y: np.ndarray, fs_hz: float) -> float:
    """Centroid of the slope's power spectrum (|f X(f)|^2, all leads) within ``SPECTRUM_BAND_HZ``: where
    the waveform's fast edges sit; a signal played k times slower moves it k times lower."""
    spec = np.abs(np.fft.rfft(y, axis=1)) ** 2
    f = np.fft.rfftfreq(y.shape[1], 1.0 / fs_hz)
    band = (f >= SPECTRUM_BAND_HZ[0]) & (f <= min(SPECTRUM_BAND_HZ[1], fs_hz / 2))
    power = (spec[:, band] * f[band] ** 2).sum(axis=0)
    total = float(power.sum())
    return float((power * f[band]).sum() / total) if total > 0 else 0.0


def _dropouts(x: np.ndarray, fs_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Per lead: the share of samples that jump to the lead's most common value and back (both
    neighbours far from it), and the longest run (s) of one value held constant."""
    n_leads, n = x.shape
    jumps, runs = np.zeros(n_leads), np.zeros(n_leads)
    for k in range(n_leads):
        v = x[k]
        values, counts = np.unique(v, return_counts=True)
        mode = values[int(np.argmax(counts))]
        step = np.abs(np.diff(v))
        typical = float(np.median(step[step > 0])) if (step > 0).any() else 0.0
        far = np.abs(v - mode) > max(5.0 * typical, 0.02)  # 20 uV at least: a quantisation step is 1-5 uV
        isolated = (v[1:-1] == mode) & far[:-2] & far[2:]
        jumps[k] = float(isolated.mean()) if n > 2 else 0.0
        same = np.concatenate([[False], step == 0, [False]])
        edges = np.flatnonzero(np.diff(same.astype(np.int8)))
        runs[k] = float((edges[1::2] - edges[0::2]).max() + 1) / fs_hz if edges.size else 0.0
    return jumps, runs


def window_metrics(x: np.ndarray, fs_hz: float, live: np.ndarray) -> dict[str, float | str]:
    """Everything the checks read from one window: (12, n) mV in ``CANONICAL_LEADS`` order, ``live`` the
    leads that are not flat. Keys: see :func:`assess`."""
    x = np.asarray(x, dtype=np.float64)
    y = _bandpass(x, fs_hz)
    m = measure(y, fs_hz)
    f = dict(zip(FEATURE_NAMES, m.features.tolist(), strict=True))
    out: dict[str, float | str] = {k: f[k] for k in ("heart_rate_bpm", "n_beats", "qrs_ms")}
    for lead in ("I", "II", "aVR"):
        for wave in ("p", "t"):
            out[f"{lead}.{wave}"] = f[f"{lead}.{wave}_mv"]
        out[f"{lead}.qrs"] = f[f"{lead}.r_mv"] + f[f"{lead}.s_mv"]  # net QRS: R height + (negative) S depth
    beats = m.beats
    half = max(1, round(QRS_HALF_S * fs_hz))
    qrs = _segments(y, beats, half, half)  # (beats, leads, qrs window)
    if qrs.shape[0]:
        mb = np.median(qrs, axis=0)
        p2p = np.where(live, mb.max(axis=1) - mb.min(axis=1), 0.0)
        out["qrs_p2p_max_mv"] = float(p2p.max())
        # beat-to-beat change of the QRS slope energy: respiration moves a real heart's axis and amplitude
        energy = (np.diff(qrs[:, live], axis=-1) ** 2).sum(axis=(1, 2))
        enough = qrs.shape[0] >= 4 and energy.mean() > 0
        out["qrs_energy_cv"] = float(energy.std() / energy.mean()) if enough else math.nan
        # ... and how the QRS energy is shared between the leads (the axis; unmoved by time shifts and gain)
        share = (qrs[:, live] ** 2).sum(axis=2)
        share = share / np.maximum(share.sum(axis=1, keepdims=True), 1e-30)  # (beats, live leads)
        change = np.abs(share - np.median(share, axis=0)).sum(axis=1) / 2
        out["qrs_axis_change"] = float(np.median(change)) if enough else math.nan
    else:
        out["qrs_p2p_max_mv"] = 0.0
        out["qrs_energy_cv"] = out["qrs_axis_change"] = math.nan
    out["slope_centroid_hz"] = _slope_centroid_hz(y[live], fs_hz)
    # time order: the flanks' rms after over before the QRS, at the same distances (mirror images)
    out["after_before"] = math.nan
    if beats.size >= 3:
        rr_s = float(np.median(np.diff(beats))) / fs_hz
        d, e = round(min(FLANK_S[1], FLANK_S[1] * rr_s) * fs_hz), round(FLANK_S[0] * fs_hz)
        around = _segments(y[live], beats, d, d)
        if around.shape[0] >= 2 and d > e + 1:
            mb = np.median(around, axis=0)
            flanks = np.concatenate([mb[:, : d - e], mb[:, d + e + 1 :]], axis=1)
            mb = mb - np.median(flanks, axis=1, keepdims=True)
            before = float(np.sqrt((mb[:, : d - e] ** 2).mean()))
            after = float(np.sqrt((mb[:, d + e + 1 :] ** 2).mean()))
            out["after_before"] = after / max(before, 1e-9)
    out["repeat_residual"], out["repeat_lag_s"] = _repetition(x[live], fs_hz)
    # single leads: energy near the common beats, and how alike the lead's beats are
    conc, corr = np.full(12, np.inf), np.ones(12)
    if beats.size:
        slope2 = np.gradient(y, axis=-1) ** 2
        near = np.zeros(y.shape[1], dtype=bool)
        for b in beats:
            near[max(0, b - half) : b + half + 1] = True
        conc = slope2[:, near].sum(axis=1) / np.maximum(slope2.sum(axis=1), 1e-30) / max(near.mean(), 1e-9)
        seg = _segments(y, beats, round(0.25 * fs_hz), round(0.4 * fs_hz))
        if seg.shape[0] >= 3:
            mb = np.median(seg, axis=0)
            num = (seg * mb).sum(axis=2)
            den = np.sqrt((seg**2).sum(axis=2) * (mb**2).sum(axis=1)) + 1e-30
            corr = np.median(num / den, axis=0)
    noise_score = np.where(live, np.maximum(conc / 1.5, corr / 0.5), np.inf)  # < 1 on both counts: noise
    worst = int(np.argmin(noise_score))
    out.update(
        lead_noise_score=float(noise_score[worst]),
        lead_noise_lead=CANONICAL_LEADS[worst],
        lead_concentration=float(conc[worst]),
        lead_beat_correlation=float(corr[worst]),
    )
    jumps, runs = _dropouts(x, fs_hz)
    jumps, runs = np.where(live, jumps, 0.0), np.where(live, runs, 0.0)
    out.update(
        dropout_share=float(jumps.max()),
        dropout_lead=CANONICAL_LEADS[int(jumps.argmax())],
        constant_run_s=float(runs.max()),
        constant_run_lead=CANONICAL_LEADS[int(runs.argmax())],
    )
    return out


def assess(x: np.ndarray, fs_hz: float, live: np.ndarray, cfg: QualityConfig | None = None) -> list[Finding]:
    """The plausibility findings of one window ((12, n) mV, ``CANONICAL_LEADS`` order; ``live``: the leads
    that are not flat); empty when every check passes."""
    cfg = cfg or QualityConfig()
    with np.errstate(all="ignore"):  # degenerate windows give NaN metrics, read as "not measurable"
        m = window_metrics(x, fs_hz, live)
    return findings(m, live, cfg)


def findings(
    m: dict[str, float | str], live: Sequence[bool] | np.ndarray, cfg: QualityConfig
) -> list[Finding]:
    """:func:`assess` from metrics already computed (the thresholds are ``cfg``'s)."""
    v = {k: float(val) for k, val in m.items() if not isinstance(val, str)}
    live = np.asarray(live, dtype=bool)
    out: list[Finding] = []

    def add(check: str, refuse: bool, *parts: str) -> None:
        out.append(Finding(check, refuse, "".join(parts)))

    # limb electrodes: the signs of P, QRS and T in I (negative) and aVR (positive), and II for inversion
    if live[[LEAD["I"], LEAD["II"], LEAD["aVR"]]].all():
        w = cfg.min_wave_mv
        lead_i = (v["I.p"] < -w, v["I.qrs"] < 0, v["I.t"] < -w)
        avr = (v["aVR.p"] > w, v["aVR.qrs"] > 0, v["aVR.t"] > w)
        lead_ii = (v["II.p"] < -w, v["II.qrs"] < 0, v["II.t"] < -w)
        if sum(lead_i) + sum(avr) >= 5:
            what = (
                "every lead inverted (II negative too)"
                if sum(lead_ii) >= 2
                else "the left and right arm electrodes swapped (or dextrocardia)"
            )
            add(
                "limb_leads",
                False,
                "limb electrodes reversed? P, QRS and T are negative in lead I and ",
                f"positive in aVR ({sum(lead_i)}/3 and {sum(avr)}/3), as with {what}: answers about axis, ",
                "infarction, hypertrophy and rhythm may be wrong",
            )
    # rate against waveform: both the beat rate and the slope spectrum scale with a wrong sampling rate
    hr, centroid = v["heart_rate_bpm"], v["slope_centroid_hz"]
    if centroid > 0:
        scale = (math.log(hr / 70.0) if hr > 0 else math.log(20.0 / 70.0)) + math.log(centroid / 18.0)
        if abs(scale) > cfg.rate_warn:
            direction = "slower" if scale < 0 else "faster"
            add(
                "rate",
                abs(scale) > cfg.rate_refuse,
                "the waveform contradicts the stated sampling rate: ",
                f"{hr:.0f} bpm with the slopes centred at {centroid:.1f} Hz (QRS {v['qrs_ms']:.0f} ms) ",
                f"look like an ECG played about {math.exp(abs(scale) / 2):.1f}x {direction} than recorded ",
                f"(scale index {scale:+.2f}, limit {cfg.rate_warn:g}): is the header's sampling rate right?",
            )
    # amplitude
    p2p = v["qrs_p2p_max_mv"]
    (warn_lo, warn_hi), (ref_lo, ref_hi) = cfg.qrs_warn_mv, cfg.qrs_refuse_mv
    if not warn_lo <= p2p <= warn_hi:
        hint = "x10?" if p2p > warn_hi else "x0.1?, or no signal"
        add(
            "amplitude",
            not ref_lo <= p2p <= ref_hi,
            f"implausible amplitude: the largest QRS of the 12 leads is {p2p:.3g} mV peak to peak ",
            f"(hearts give {warn_lo:g}-{warn_hi:g} mV): a gain or units error ({hint})",
        )
    # time order
    ratio = v["after_before"]
    if math.isfinite(ratio) and ratio < cfg.time_order_warn:
        add(
            "time_order",
            False,
            f"time reversed? the waves after each QRS are {ratio:.2f}x those before ",
            f"it (T follows the QRS and is larger than P: an ECG gives > {cfg.time_order_warn:g})",
        )
    # repetition: a segment copied, or beats identical to the last digit
    residual, lag = v["repeat_residual"], v["repeat_lag_s"]
    if residual < cfg.repeat_warn:
        add(
            "repetition",
            residual < cfg.repeat_refuse,
            f"the signal repeats itself: shifted by {lag:.2f} s it differs from itself by {residual:.1e} ",
            f"of its energy (a real ECG by > {cfg.repeat_warn:g}): copies of one segment, a simulator or a ",
            "synthetic signal",
        )
    change, axis = v["qrs_energy_cv"], v["qrs_axis_change"]
    if math.isfinite(change) and (change < cfg.beat_change_warn or axis < cfg.axis_change_warn):
        add(
            "repetition",
            change < cfg.beat_change_refuse,
            f"the QRS complexes are identical: from beat to beat their slope energy varies by {change:.1e} ",
            f"(CV) and its share among the leads by {axis:.1e} (breathing alone moves a real heart's by > ",
            f"{cfg.beat_change_warn:g} and > {cfg.axis_change_warn:g}): a synthetic or copied signal",
        )
    # single leads
    if v["lead_noise_score"] < cfg.lead_noise_warn:
        add(
            "lead_noise",
            False,
            f"lead {m['lead_noise_lead']} looks like noise: its beats do not resemble ",
            f"each other (correlation {v['lead_beat_correlation']:.2f}) and its energy does not gather at ",
            f"the QRS complexes of the other leads ({v['lead_concentration']:.2f}x its average): answers ",
            "that need it may be wrong",
        )
    share = v["dropout_share"]
    if share > cfg.dropout_warn:
        add(
            "lead_noise",
            share > cfg.dropout_refuse,
            f"dropouts in lead {m['dropout_lead']}: {share:.1%} of its samples jump to one value and back ",
            f"(a real trace: < {cfg.dropout_warn:.1%}): samples lost or zeroed",
        )
    run = v["constant_run_s"]  # longer than constant_run_refuse_s: a dead lead (diagecg.quality.dead_leads)
    if run > cfg.constant_run_warn_s:
        add(
            "lead_noise",
            False,
            f"dropout in lead {m['constant_run_lead']}: it holds one value for {run:.2f} s (a live trace ",
            f"never does for > {cfg.constant_run_warn_s:g} s)",
        )
    return out


def note_code(message: str) -> str | None:
    """The warning code (:data:`CHECKS`) of a record warning written by :func:`findings`, or None."""
    for prefix, check in _PREFIXES:
        if message.startswith(prefix):
            return CHECKS[check]
    return None


_PREFIXES: tuple[tuple[str, str], ...] = (
    ("limb electrodes reversed?", "limb_leads"),
    ("the waveform contradicts the stated", "rate"),
    ("implausible amplitude", "amplitude"),
    ("time reversed?", "time_order"),
    ("the signal repeats itself", "repetition"),
    ("the QRS complexes are identical", "repetition"),
    ("lead ", "lead_noise"),
    ("dropouts in lead", "lead_noise"),
    ("dropout in lead", "lead_noise"),
)

"""Signal sanity checks run on every record read (thresholds in ``QualityConfig``).

A record is rejected with :class:`~diagecg.errors.SignalQualityError` when it is unusable: NaN/inf
samples, a flat lead, a saturated lead (stuck at its rail), an amplitude that cannot be mV, too
few seconds, or a signal that is not a 12-lead ECG (:func:`ecg_problems`: limb leads that break
Einthoven's and Goldberger's relations, two leads that are copies of one signal, no QRS complexes).
Milder problems come back as warnings.

Then the plausibility checks of :mod:`diagecg.plausibility` (limb electrodes, rate against waveform,
amplitude, time order, repetition, single-lead noise and dropouts) refuse a record that is certainly
recorded or stored wrongly and warn about one that may be.

Degraded mode (``QualityConfig.allow_flat_leads``, ``diagecg infer --allow-degraded``): a record
with some flat leads (a missing or disconnected precordial electrode is common in other hospitals'
exports) is read with a warning naming the leads and what can still be trusted: rhythm questions
when the limb leads are intact (rate and regularity are read there), nothing morphological. A flat
limb lead leaves nothing to trust: such a record is refused even in degraded mode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from diagecg import plausibility
from diagecg.config import QualityConfig
from diagecg.constants import CANONICAL_LEADS
from diagecg.dsp import butter_filtfilt
from diagecg.errors import SignalQualityError
from diagecg.features import detect_beats

LIMB_LEADS: tuple[str, ...] = CANONICAL_LEADS[:6]  # I, II, III, aVR, aVL, aVF
# lead = sum of weight * lead: the limb leads are two projections of one cardiac vector
LEAD_RELATIONS: tuple[tuple[str, dict[str, float]], ...] = (
    ("II", {"I": 1.0, "III": 1.0}),  # Einthoven
    ("aVR", {"I": -0.5, "II": -0.5}),  # Goldberger
    ("aVL", {"I": 0.5, "III": -0.5}),
    ("aVF", {"II": 0.5, "III": 0.5}),
)
PLAUSIBILITY_WINDOW_S = 10.0  # long records are checked on evenly spaced windows of this length
PLAUSIBILITY_MAX_WINDOWS = 6
QRS_HALF_WIDTH_S = 0.06  # the slope energy within this of a detected beat counts as QRS energy


def _leads_text(names: Sequence[str], mask: np.ndarray) -> str:
    return ", ".join(str(names[int(i)]) for i in np.flatnonzero(mask))


def check_signal(
    signal: np.ndarray,
    fs_hz: float,
    lead_names: Sequence[str],
    source: str,
    cfg: QualityConfig | None = None,
) -> list[str]:
    """Check that a signal is a usable ECG in mV.

    Args:
        signal: float array, mV, shape (leads, samples).
        fs_hz: sampling rate in Hz.
        lead_names: one name per row of ``signal``.
        source: the file the signal came from (named in every message).
        cfg: thresholds; ``QualityConfig()`` when None.

    Returns:
        Warnings about milder problems (a lead partly at its rail).

    Raises:
        SignalQualityError: NaN/inf samples, flat or saturated leads, max |x - median| above
            ``cfg.max_abs_mv`` (units wrong?), or shorter than ``cfg.min_duration_s``.
    """
    cfg = cfg or QualityConfig()
    x = np.asarray(signal)
    if x.ndim != 2 or x.shape[0] != len(lead_names):
        raise SignalQualityError(
            f"{source}: signal shape {x.shape} does not match {len(lead_names)} leads x samples"
        )
    if not fs_hz > 0:
        raise SignalQualityError(f"{source}: sampling rate {fs_hz} Hz is not positive")
    n_leads, n = x.shape
    duration_s = n / fs_hz
    if duration_s < cfg.min_duration_s:
        raise SignalQualityError(
            f"{source}: record too short: {duration_s:.3f} s ({n} samples at "
            f"{fs_hz:g} Hz); at least {cfg.min_duration_s:g} s is required"
        )
    finite = np.isfinite(x)
    if not finite.all():
        bad = ~finite.all(axis=1)
        counts = ", ".join(f"{lead_names[int(i)]}: {int((~finite[i]).sum())}" for i in np.flatnonzero(bad))
        raise SignalQualityError(f"{source}: NaN/inf samples (invalid or missing values) in lead(s) {counts}")
    x = x.astype(np.float64, copy=False)
    # (leads, samples): amplitude around each lead's median, so a DC offset alone does not count
    median = np.median(x, axis=1, keepdims=True)
    peak = np.abs(x - median).max(axis=1)  # (leads,)
    too_big = peak > cfg.max_abs_mv
    if too_big.any():
        raise SignalQualityError(
            f"{source}: implausible amplitude in lead(s) {_leads_text(lead_names, too_big)}: "
            f"max |x - median| = {peak.max():.4g} mV > {cfg.max_abs_mv:g} mV; the signal does not look "
            f"like mV (uV given as mV? check the header units)"
        )
    flat = dead_leads(x, fs_hz, cfg)  # (leads,)
    if flat.all():
        raise SignalQualityError(
            f"{source}: every lead is flat (max std {x.std(axis=1).max():.3g} mV < {cfg.flat_std_mv:g} mV); "
            f"an empty recording, or V given as mV? check the header units"
        )
    warnings: list[str] = []
    if flat.any() and not cfg.allow_flat_leads:
        raise SignalQualityError(
            f"{source}: flat lead(s) {_leads_text(lead_names, flat)} "
            f"(std < {cfg.flat_std_mv:g} mV over the record, or one value held for more "
            f"than {cfg.constant_run_refuse_s:g} s: an electrode off); --allow-degraded "
            f"(QualityConfig.allow_flat_leads) answers anyway, with a warning"
        )
    if flat.any():
        flat_names = [str(lead_names[int(i)]) for i in np.flatnonzero(flat)]
        limb = [name for name in flat_names if name in LIMB_LEADS]
        if limb and cfg.require_ecg:  # degraded_warning would say no answer can be trusted: none is given
            raise SignalQualityError(
                f"{source}: flat limb lead(s) {', '.join(limb)}: rhythm is read from "
                f"the limb leads, so no answer about this record could be trusted, not "
                f"even with --allow-degraded"
            )
        warnings.append(degraded_warning(flat_names))
    live = ~flat
    # fraction of samples sitting exactly at the lead's own min or max: clipping at the ADC rail
    lo = x.min(axis=1, keepdims=True)
    hi = x.max(axis=1, keepdims=True)
    at_rail = np.where(live, np.maximum((x == lo).mean(axis=1), (x == hi).mean(axis=1)), 0.0)  # (leads,)
    saturated = at_rail > cfg.rail_fraction
    if saturated.any():
        detail = ", ".join(f"{lead_names[int(i)]}: {at_rail[i]:.0%}" for i in np.flatnonzero(saturated))
        raise SignalQualityError(
            f"{source}: saturated lead(s), samples stuck at the min/max rail: "
            f"{detail} (limit {cfg.rail_fraction:.0%})"
        )
    partly = at_rail > cfg.rail_warn_fraction
    if partly.any():
        detail = ", ".join(f"{lead_names[int(i)]}: {at_rail[i]:.1%}" for i in np.flatnonzero(partly))
        warnings.append(f"lead(s) partly at their min/max rail (clipping?): {detail}")
    if cfg.require_ecg and tuple(lead_names) == CANONICAL_LEADS:
        warnings += _check_is_ecg(x, fs_hz, source, cfg, live)
    return warnings


def _check_is_ecg(
    x: np.ndarray, fs_hz: float, source: str, cfg: QualityConfig, live: np.ndarray
) -> list[str]:
    """Refuse a signal that is not a 12-lead ECG, or fails a plausibility check that refuses, in all or most
    windows; warn when some windows fail, and for every plausibility check that warns."""
    n = x.shape[1]
    width = round(PLAUSIBILITY_WINDOW_S * fs_hz)
    if n <= width * PLAUSIBILITY_MAX_WINDOWS:
        windows = [x]
    else:  # a long record: evenly spaced windows, so the check costs the same for any length
        starts = np.linspace(0, n - width, PLAUSIBILITY_MAX_WINDOWS).round().astype(int)
        windows = [x[:, s : s + width] for s in starts]
    problems = [ecg_problems(w, fs_hz, cfg) for w in windows]
    failed = [p for p in problems if p]
    if failed and 2 * len(failed) > len(windows):
        raise SignalQualityError(f"{source}: does not look like a 12-lead ECG: {'; '.join(failed[0])}")
    warnings = []
    if failed:
        warnings.append(
            f"{len(failed)} of {len(windows)} checked {PLAUSIBILITY_WINDOW_S:g} s windows do not "
            f"look like an ECG ({'; '.join(failed[0])})"
        )
    if cfg.plausibility:
        found = [
            plausibility.assess(w, fs_hz, live, cfg) if not p else []
            for w, p in zip(windows, problems, strict=True)
        ]
        warnings += _plausibility_verdict(found, len(windows), source)
    return warnings


def _plausibility_verdict(found: list[list[plausibility.Finding]], n_windows: int, source: str) -> list[str]:
    """Refuse on a refusing finding in most windows; else one warning per kind of finding (the first
    window's message, with how many windows showed it)."""
    kinds: dict[str, list[plausibility.Finding]] = {}
    for window in found:
        for f in window:
            kinds.setdefault(f.message.split(":")[0], []).append(f)
    for hits in kinds.values():
        refusals = [f for f in hits if f.refuse]
        if refusals and 2 * len(refusals) > n_windows:
            raise SignalQualityError(
                f"{source}: implausible as a recorded ECG ({refusals[0].code}): {refusals[0].message}"
            )
    where = (
        (lambda k: f" (in {k} of {n_windows} checked {PLAUSIBILITY_WINDOW_S:g} s windows)")
        if n_windows > 1
        else (lambda k: "")
    )
    return [hits[0].message + where(len(hits)) for hits in kinds.values()]


def ecg_problems(signal: np.ndarray, fs_hz: float, cfg: QualityConfig | None = None) -> list[str]:
    """Why a 12-lead signal (mV, ``CANONICAL_LEADS`` order) is not an ECG; empty when it looks like one.

    Three checks, each ignoring flat leads, on the signal band-passed to 0.5-40 Hz:

    * **lead relations**: the six limb leads are projections of one cardiac vector, so
      II = I + III, aVR = -(I + II)/2, aVL = (I - III)/2 and aVF = (II + III)/2; the error is the
      rms of the difference over the larger rms of the two sides. Swapped signs (a lead written
      inverted), copied or independent signals break it.
    * **copied leads**: two leads whose difference is below ``cfg.min_lead_difference`` of their rms.
    * **QRS complexes**: the share of the slope energy within 60 ms of detected beats, over the
      share of time those windows cover. QRS complexes concentrate it (real ECGs: >= 2.6); noise
      (~1) and smooth waves such as a sine (~1.9) do not.
    """
    cfg = cfg or QualityConfig()
    x = np.asarray(signal, dtype=np.float64)
    live = ~flat_leads(x, cfg)  # (leads,)
    y = butter_filtfilt(x, 2, 0.5, "highpass", fs_hz)
    y = butter_filtfilt(y, 2, min(40.0, fs_hz / 2.5), "lowpass", fs_hz)  # (leads, n)
    rms = np.sqrt((y**2).mean(axis=1))  # (leads,)
    index = {name: k for k, name in enumerate(CANONICAL_LEADS)}
    problems = []
    broken = []
    for lead, parts in LEAD_RELATIONS:
        ks = [index[lead], *(index[p] for p in parts)]
        if not live[ks].all():
            continue
        rhs = sum(w * y[index[p]] for p, w in parts.items())
        scale = max(rms[ks[0]], np.sqrt((rhs**2).mean()), 1e-12)
        error = float(np.sqrt(((y[index[lead]] - rhs) ** 2).mean()) / scale)
        if error > cfg.max_lead_relation_error:
            broken.append(
                f"{lead} = {' + '.join(f'{w:g}*{p}' for p, w in parts.items())} is off by {error:.0%}"
            )
    if broken:
        problems.append(
            f"the limb leads break the relations every ECG obeys ({'; '.join(broken)}): an "
            f"inverted, swapped or copied lead, or not an ECG"
        )
    alive = np.flatnonzero(live)
    copies = [
        f"{CANONICAL_LEADS[i]} = {CANONICAL_LEADS[j]}"
        for a, i in enumerate(alive)
        for j in alive[a + 1 :]
        if np.sqrt(((y[i] - y[j]) ** 2).mean()) < cfg.min_lead_difference * max(rms[i], rms[j])
    ]
    if copies:
        problems.append(
            f"leads are copies of one signal ({', '.join(copies[:4])}{', ...' if len(copies) > 4 else ''})"
        )
    concentration = qrs_concentration(y[live], fs_hz)
    if concentration < cfg.min_qrs_concentration:
        problems.append(
            f"no QRS complexes found (slope energy near detected beats {concentration:.2f}x its "
            f"average; an ECG has >= {cfg.min_qrs_concentration:g}x): noise or a non-ECG signal"
        )
    return problems


def qrs_concentration(y: np.ndarray, fs_hz: float) -> float:
    """Share of the slope energy of (leads, n) within ``QRS_HALF_WIDTH_S`` of detected beats, over the
    share of samples those windows cover (1.0: no concentration; 0.0: no beat detected)."""
    beats = detect_beats(y, fs_hz)
    if beats.size == 0:
        return 0.0
    energy = ((np.gradient(y, axis=-1)) ** 2).sum(axis=0)  # (n,)
    half = max(1, round(QRS_HALF_WIDTH_S * fs_hz))
    near = np.zeros(energy.size, dtype=bool)
    for b in beats:
        near[max(0, b - half) : b + half + 1] = True
    total = float(energy.sum())
    return float(energy[near].sum() / total / near.mean()) if total > 0 else 0.0


def flat_leads(signal: np.ndarray, cfg: QualityConfig | None = None) -> np.ndarray:
    """Bool (leads,): the leads whose standard deviation over the record is below ``cfg.flat_std_mv``."""
    cfg = cfg or QualityConfig()
    return np.asarray(signal, dtype=np.float64).std(axis=1) < cfg.flat_std_mv


def dead_leads(signal: np.ndarray, fs_hz: float, cfg: QualityConfig | None = None) -> np.ndarray:
    """Bool (leads,): flat leads (:func:`flat_leads`) and leads that hold one value for more than
    ``cfg.constant_run_refuse_s`` (an electrode that came off during the recording: a live trace never
    holds still that long; two real PTB-XL records show it, V6 held for 7.1 s and at -20 mV for 9.3 s)."""
    cfg = cfg or QualityConfig()
    x = np.asarray(signal)
    dead = flat_leads(x, cfg)
    longest = max(1, math.ceil(cfg.constant_run_refuse_s * fs_hz))
    for k in np.flatnonzero(~dead):
        same = np.concatenate([[False], x[k, 1:] == x[k, :-1], [False]])
        edges = np.flatnonzero(np.diff(same.astype(np.int8)))
        dead[k] = bool(edges.size) and int((edges[1::2] - edges[0::2]).max()) + 1 > longest
    return dead


def degraded_warning(flat: Sequence[str]) -> str:
    """The warning of a record read in degraded mode: which leads are flat and what can be trusted."""
    limb_ok = not any(name in LIMB_LEADS for name in flat)
    trust = (
        "rhythm questions can still be trusted (rate and regularity are read from the intact limb "
        "leads); morphology, conduction, hypertrophy, infarction and ST/T answers cannot"
        if limb_ok
        else "no answer can be trusted: limb leads are flat too"
    )
    return (
        f"degraded record: flat lead(s) {', '.join(flat)}; the model was trained on 12 working leads, "
        f"so {trust}"
    )

"""Signal sanity checks run on every record read (thresholds in ``QualityConfig``).

A record is rejected with :class:`~diagecg.errors.SignalQualityError` when it is unusable: NaN/inf
samples, a flat lead, a saturated lead (stuck at its rail), an amplitude that cannot be mV, or too
few seconds. Milder problems come back as warnings.

Degraded mode (``QualityConfig.allow_flat_leads``, ``diagecg infer --allow-degraded``): a record
with some flat leads (a missing or disconnected precordial electrode is common in other hospitals'
exports) is read with a warning naming the leads and what can still be trusted: rhythm questions
when the limb leads are intact (rate and regularity are read there), nothing morphological.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from diagecg.config import QualityConfig
from diagecg.constants import CANONICAL_LEADS
from diagecg.errors import SignalQualityError

LIMB_LEADS: tuple[str, ...] = CANONICAL_LEADS[:6]  # I, II, III, aVR, aVL, aVF


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
        raise SignalQualityError(f"{source}: signal shape {x.shape} does not match "
                                 f"{len(lead_names)} leads x samples")
    if not fs_hz > 0:
        raise SignalQualityError(f"{source}: sampling rate {fs_hz} Hz is not positive")
    n_leads, n = x.shape
    duration_s = n / fs_hz
    if duration_s < cfg.min_duration_s:
        raise SignalQualityError(f"{source}: record too short: {duration_s:.3f} s ({n} samples at "
                                 f"{fs_hz:g} Hz); at least {cfg.min_duration_s:g} s is required")
    finite = np.isfinite(x)
    if not finite.all():
        bad = ~finite.all(axis=1)
        counts = ", ".join(f"{lead_names[int(i)]}: {int((~finite[i]).sum())}" for i in np.flatnonzero(bad))
        raise SignalQualityError(f"{source}: NaN/inf samples (invalid or missing values) in "
                                 f"lead(s) {counts}")
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
    flat = flat_leads(x, cfg)  # (leads,)
    if flat.all():
        raise SignalQualityError(
            f"{source}: every lead is flat (max std {x.std(axis=1).max():.3g} mV < {cfg.flat_std_mv:g} mV); "
            f"an empty recording, or V given as mV? check the header units"
        )
    warnings: list[str] = []
    if flat.any() and not cfg.allow_flat_leads:
        raise SignalQualityError(f"{source}: flat lead(s) {_leads_text(lead_names, flat)} "
                                 f"(std < {cfg.flat_std_mv:g} mV over the record); --allow-degraded "
                                 f"(QualityConfig.allow_flat_leads) answers anyway, with a warning")
    if flat.any():
        warnings.append(degraded_warning([str(lead_names[int(i)]) for i in np.flatnonzero(flat)]))
        x = x[~flat]  # the rail check below is about the leads that carry a signal
        lead_names = [n for n, f in zip(lead_names, flat, strict=True) if not f]
    # fraction of samples sitting exactly at the lead's own min or max: clipping at the ADC rail
    lo = x.min(axis=1, keepdims=True)
    hi = x.max(axis=1, keepdims=True)
    at_rail = np.maximum((x == lo).mean(axis=1), (x == hi).mean(axis=1))  # (leads,)
    saturated = at_rail > cfg.rail_fraction
    if saturated.any():
        detail = ", ".join(f"{lead_names[int(i)]}: {at_rail[i]:.0%}" for i in np.flatnonzero(saturated))
        raise SignalQualityError(f"{source}: saturated lead(s), samples stuck at the min/max rail: "
                                 f"{detail} (limit {cfg.rail_fraction:.0%})")
    partly = at_rail > cfg.rail_warn_fraction
    if partly.any():
        detail = ", ".join(f"{lead_names[int(i)]}: {at_rail[i]:.1%}" for i in np.flatnonzero(partly))
        warnings.append(f"lead(s) partly at their min/max rail (clipping?): {detail}")
    return warnings


def flat_leads(signal: np.ndarray, cfg: QualityConfig | None = None) -> np.ndarray:
    """Bool (leads,): the leads whose standard deviation over the record is below ``cfg.flat_std_mv``."""
    cfg = cfg or QualityConfig()
    return np.asarray(signal, dtype=np.float64).std(axis=1) < cfg.flat_std_mv


def degraded_warning(flat: Sequence[str]) -> str:
    """The warning of a record read in degraded mode: which leads are flat and what can be trusted."""
    limb_ok = not any(name in LIMB_LEADS for name in flat)
    trust = ("rhythm questions can still be trusted (rate and regularity are read from the intact limb "
             "leads); morphology, conduction, hypertrophy, infarction and ST/T answers cannot"
             if limb_ok else "no answer can be trusted: limb leads are flat too")
    return (f"degraded record: flat lead(s) {', '.join(flat)}; the model was trained on 12 working leads, "
            f"so {trust}")

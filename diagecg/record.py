"""Validate a signal into an :class:`~diagecg.types.EcgRecord` (float32 mV, the 12 leads in canonical order).

Every reader of :mod:`diagecg.formats` ends in :func:`record_from_array`, and so does a record built by
hand (:func:`check_record`): one place holds the checks a record passes, whatever file it came from
(lead names, units, sampling rate, size, the signal checks of :mod:`diagecg.quality`). The limits the
readers check before they decode anything (``MAX_RECORD_SAMPLES``, the sampling-rate range, the units a
file may state) live here too, so that a file is refused for the same reason in every format.
``diagecg.io.read_record`` is the entry point that picks the reader.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence

import numpy as np

from diagecg.config import QualityConfig
from diagecg.constants import CANONICAL_LEADS
from diagecg.errors import LeadError, RecordError, SignalQualityError
from diagecg.leads import canonical_lead_order
from diagecg.quality import check_signal
from diagecg.types import EcgRecord, F32Array, PatientInfo

logger = logging.getLogger(__name__)

MAX_RECORD_SAMPLES = 50_000_000  # leads x samples; 12 leads x 1 h at 1 kHz fits, a day-long Holter does not

# sampling rates an ECG can have: below, no QRS survives; above, no ECG device records (and the
# resampler would be asked for absurd factors)
MIN_FS_HZ, MAX_FS_HZ = 50.0, 20_000.0
# unit as written in a file -> factor to mV
UNITS_TO_MV: dict[str, float] = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nv": 1e-6}
F32_MAX_MV = float(np.finfo(np.float32).max)  # samples are stored as float32 mV


def record_from_array(
    signal: np.ndarray,
    fs_hz: float,
    lead_names: Sequence[str],
    *,
    units: str = "mV",
    source: str = "<array>",
    record_id: str = "",
    patient: PatientInfo | None = None,
    diagnoses: Sequence[str] = (),
    warnings: Sequence[str] = (),
    quality: QualityConfig | None = None,
) -> EcgRecord:
    """Validate an in-memory signal the way ``read_record`` validates a file: every file reader ends
    here, and so does an ``EcgRecord`` built by hand (``check_record``).

    Args:
        signal: shape (leads, samples), in ``units``: real floats or integers (a masked array only
            without masked samples).
        fs_hz: sampling rate in Hz (a Python or numpy int or float, not a bool).
        lead_names: one name per row, any spelling ``diagecg.leads`` knows.
        units: ``"mV"``, ``"uV"``, ``"V"`` or ``"nV"``.

    Returns:
        An EcgRecord: float32 mV, shape (12, samples), leads in ``CANONICAL_LEADS`` order.

    Raises:
        LeadError: missing, unknown or duplicate leads.
        SignalQualityError: see ``diagecg.quality.check_signal``; values beyond float32 (a wrong scale).
        RecordError: a signal that is not a real 2-D numeric array (complex, bool, object, masked
            samples), longer than ``MAX_RECORD_SAMPLES`` values, bad units, sampling rate or lead names.
    """
    _check_text(source, "source", "<array>")
    x = _real_array(signal, source)
    if x.ndim != 2 or 0 in x.shape:
        raise RecordError(f"{source}: signal must have shape (leads, samples), got {x.shape}")
    if x.size > MAX_RECORD_SAMPLES:
        raise RecordError(
            f"{source}: {x.shape[0]} x {x.shape[1]} values are more than diagecg reads "
            f"({MAX_RECORD_SAMPLES}); crop the record first"
        )
    rate = _rate(fs_hz, source)
    _check_text(units, "units", source)
    factor = UNITS_TO_MV.get(units.strip().lower())
    if factor is None:
        raise RecordError(f"{source}: units {units!r} are not a voltage (known: mV, uV, V, nV)")
    names = _texts(lead_names, "lead_names", source)
    if len(names) != x.shape[0]:
        raise RecordError(f"{source}: {len(names)} lead names for {x.shape[0]} signal rows")
    _check_text(record_id, "record_id", source)
    if patient is not None and not isinstance(patient, PatientInfo):
        raise RecordError(
            f"{source}: patient must be a diagecg.types.PatientInfo or None, not {type(patient).__name__}"
        )
    diagnoses, warnings = _texts(diagnoses, "diagnoses", source), _texts(warnings, "warnings", source)
    try:
        indices, lead_warnings = canonical_lead_order(names)
    except LeadError as e:
        raise LeadError(f"{source}: {e}") from None
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below, not printed
        mv64 = x[indices].astype(np.float64) * factor  # (12, samples) mV
        out_of_range = np.isinf(mv64) | (np.abs(mv64) > F32_MAX_MV)
    if out_of_range.any():
        raise SignalQualityError(
            f"{source}: {int(out_of_range.sum())} samples are infinite or beyond "
            f"float32 (|x| > {F32_MAX_MV:.3g} mV): a wrong scale, gain or units"
        )
    mv: F32Array = mv64.astype(np.float32)
    del mv64
    cfg = quality or QualityConfig()
    quality_warnings = check_signal(mv, rate, CANONICAL_LEADS, source, cfg)
    all_warnings = list(dict.fromkeys([*warnings, *lead_warnings, *quality_warnings]))  # each once
    for w in all_warnings:
        logger.debug("%s: %s", source, w)
    record = EcgRecord(
        signal=mv,
        fs_hz=rate,
        lead_names=CANONICAL_LEADS,
        patient=patient or PatientInfo(),
        record_id=record_id,
        source=source,
        warnings=all_warnings,
        diagnoses=diagnoses,
    )
    record.checked = record_digest(record, cfg)
    return record


def record_digest(record: EcgRecord, quality: QualityConfig) -> bytes:
    """What a record's validation depends on: its signal's bytes, dtype and shape, rate, leads, and the
    thresholds; ``EcgRecord.checked`` holds it for a record that passed."""
    h = hashlib.blake2b(digest_size=16)
    signal = record.signal
    if not isinstance(signal, np.ndarray):
        return b""
    h.update(
        f"{signal.dtype.str}|{signal.shape}|{record.fs_hz!r}|{record.lead_names!r}|{quality!r}|".encode()
    )
    h.update(signal.tobytes() if signal.flags.c_contiguous else signal.copy(order="C").tobytes())
    return h.digest()


def check_record(record: EcgRecord, quality: QualityConfig | None = None) -> EcgRecord:
    """``record`` when it passed validation with these thresholds and is unchanged since; otherwise the
    record validated as ``record_from_array`` validates an array (a record built by hand in Python gets
    every check a file gets).

    Raises:
        RecordError: as ``record_from_array``.
    """
    cfg = quality or QualityConfig()
    if not isinstance(record, EcgRecord):
        raise RecordError(f"not a diagecg.EcgRecord: {type(record).__name__}")
    if record.checked and record.checked == record_digest(record, cfg):
        return record
    source = record.source if isinstance(record.source, str) and record.source else "<EcgRecord>"
    return record_from_array(
        record.signal,
        record.fs_hz,
        record.lead_names,
        units="mV",
        source=source,
        record_id=record.record_id,
        patient=record.patient,
        diagnoses=record.diagnoses,
        warnings=record.warnings,
        quality=cfg,
    )


def _real_array(signal: object, source: str) -> np.ndarray:
    """``signal`` as an ndarray of real numbers, without copying a valid one."""
    if isinstance(signal, np.ma.MaskedArray):
        masked = np.ma.getmaskarray(signal)
        if masked.any():
            raise RecordError(
                f"{source}: the signal is a masked array with {int(masked.sum())} masked "
                f"samples; fill them (or crop them away) first: diagecg does not guess missing "
                f"values"
            )
        signal = signal.data
    if signal is None or isinstance(signal, (str, bytes)):
        raise RecordError(
            f"{source}: signal must be a (leads, samples) array of numbers, not {type(signal).__name__}"
        )
    try:
        x = np.asarray(signal)
    except (TypeError, ValueError) as e:  # ragged lists
        raise RecordError(f"{source}: signal is not a (leads, samples) array: {e}") from None
    if x.dtype.kind not in "fiu":
        what = {
            "c": "complex (an imaginary part would be dropped)",
            "b": "boolean",
            "O": "Python objects",
            "U": "text",
            "S": "bytes",
            "M": "dates",
            "m": "time spans",
        }.get(x.dtype.kind, str(x.dtype))
        raise RecordError(
            f"{source}: signal dtype {x.dtype} ({what}) is not a real number type; give floats or integers"
        )
    return x


def _rate(fs_hz: object, source: str) -> float:
    """The sampling rate as a float: a Python or numpy int or float, finite, positive, an ECG's."""
    if isinstance(fs_hz, (bool, np.bool_)) or not isinstance(fs_hz, (int, float, np.integer, np.floating)):
        raise RecordError(f"{source}: sampling rate {fs_hz!r} ({type(fs_hz).__name__}) is not a number of Hz")
    rate = float(fs_hz)
    if not (math.isfinite(rate) and rate > 0):
        raise RecordError(f"{source}: sampling rate {fs_hz!r} Hz is not a positive number")
    check_rate(rate, source, RecordError)
    return rate


def _check_text(value: object, what: str, source: str) -> None:
    if not isinstance(value, str):
        raise RecordError(f"{source}: {what} must be a str, not {type(value).__name__}")


def _texts(values: object, what: str, source: str) -> list[str]:
    """A sequence of str (a tuple, list or array of them; a bare str is refused: it is not a list)."""
    if values is None or isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise RecordError(f"{source}: {what} must be a list of str, not {type(values).__name__}")
    out = list(values)
    bad = [v for v in out if not isinstance(v, str)]
    if bad:
        raise RecordError(f"{source}: {what} must hold str only, not {type(bad[0]).__name__} ({bad[0]!r})")
    return [str(v) for v in out]


def check_rate(fs_hz: float, source: str, error: type[Exception]) -> None:
    """Raise ``error`` when ``fs_hz`` lies outside ``MIN_FS_HZ``..``MAX_FS_HZ`` (a reader passes its
    ``HeaderError``: the rate a file states is part of its header)."""
    if not MIN_FS_HZ <= fs_hz <= MAX_FS_HZ:
        raise error(
            f"{source}: sampling rate {fs_hz:g} Hz is not an ECG's (expected {MIN_FS_HZ:g}-"
            f"{MAX_FS_HZ:g} Hz); check the header"
        )

"""EDF / EDF+ (European Data Format, https://www.edfplus.info/specs/) -> EcgRecord, read with edfio.

An EDF file is a 256-byte header, one 256-byte header per signal, then ``n`` data records, each holding
``samples per data record`` little-endian int16 values of every signal in turn. A signal's rate is its
samples per record over the record duration; its physical value is the linear map of the digital range
``[digital min, digital max]`` onto ``[physical min, physical max]`` in its ``physical dimension``.
edfio's ``EdfSignal.data`` applies exactly that map (``(digital + offset) * gain`` with
``gain = (pmax - pmin) / (dmax - dmin)``, ``offset = pmax / gain - dmax``), but when a range is
degenerate it warns and returns the raw digital values; so the ranges are checked here first, and the
values are then scaled from the physical dimension (``uV``, ``mV``, ``V``) to mV.

Checked before any sample is decoded: that the file size is exactly the header plus the declared data
records (edfio would only warn, and then read however many records are there), the leads' shared
rate, their calibration and units, and ``leads x samples <= MAX_RECORD_SAMPLES``. EDF+ labels a signal
``<type> <sensor>`` (``ECG V1``); the ``ECG``/``EKG`` type is taken off before the lead name is looked
up, and other channels (EEG, respiration, SpO2, the ``EDF Annotations`` signal) are dropped with a
warning once the 12 leads are present. EDF+D (discontinuous) files are refused: their data records
are not contiguous in time. EDF+ patient identification (``code sex birthdate name``) and the start
date give sex and age.
"""

from __future__ import annotations

import datetime
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diagecg.config import QualityConfig
from diagecg.constants import CANONICAL_LEADS
from diagecg.errors import DiagEcgError, HeaderError, LeadError, SignalFileError
from diagecg.formats import file_number, import_optional, plausible_patient_value
from diagecg.leads import LEAD_ALIASES, normalise_lead_name
from diagecg.record import MAX_FS_HZ, MAX_RECORD_SAMPLES, MIN_FS_HZ, UNITS_TO_MV, record_from_array
from diagecg.types import EcgRecord, PatientInfo

HEADER_BYTES = 256  # the fixed header, and each signal's header
EDF_VERSION = b"0       "  # the version field of every EDF and EDF+ file
SAMPLE_BYTES = 2  # EDF samples are int16 (BDF's 24-bit files are refused by detect_format)
# byte ranges in the fixed header (EDF spec, "header record")
HEADER_BYTES_FIELD = slice(184, 192)
N_RECORDS_FIELD = slice(236, 244)
RECORD_DURATION_FIELD = slice(244, 252)
N_SIGNALS_FIELD = slice(252, 256)
# the signal headers are stored field by field (all labels, then all transducers...); "samples per data
# record" follows label 16, transducer 80, dimension 8, physical min/max 8+8, digital min/max 8+8 and
# prefiltering 80 bytes, per signal
SAMPLES_PER_RECORD_OFFSET = 216
SAMPLES_PER_RECORD_WIDTH = 8
# EDF+ signal type prefixes that mean "an ECG electrode": "ECG V1", "EKG II", "ECG-aVR", "ECG_I"
_ECG_TYPE = re.compile(r"^(?:ECG|EKG)[\s_:\-]+(?P<lead>\S.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class _Channel:
    """An ordinary EDF signal's header, read through edfio."""

    label: str
    lead: str | None  # the lead name without the ECG/EKG type; None for a non-ECG channel
    fs_hz: float
    dimension: str
    physical: tuple[float, float]
    digital: tuple[int, int]
    signal: Any  # edfio.EdfSignal; its samples are decoded only when .data is read


def read(path: Path, *, quality: QualityConfig | None = None) -> EcgRecord:
    """Read a 12-lead ECG from an EDF or EDF+ (continuous) file.

    Args:
        path: an EDF/EDF+ file whose signals include the 12 standard leads.
        quality: thresholds of the signal checks; ``QualityConfig()`` when None.

    Returns:
        EcgRecord (float32 mV, 12 canonical leads, the leads' common rate), with sex and age from the
        EDF+ patient field and ``record_id`` the file stem.

    Raises:
        SignalFileError: a size that disagrees with the header, an EDF+D file, a header edfio cannot parse,
            or edfio missing (``pip install 'diagecg[edf]'``).
        HeaderError: leads at different rates, a bad record duration, a degenerate calibration range or
            a physical dimension that is not a voltage.
        LeadError: no ECG leads (an EEG or sleep recording), or some of the 12 missing.
        SignalQualityError: from ``diagecg.record.record_from_array``.
    """
    source = str(path)
    _check_layout(path, source)
    edfio = import_optional("edfio", "edf", "EDF files", source)
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            edf = edfio.read_edf(path, lazy_load_data=True)  # memory-maps: nothing decoded yet
            reserved = edf.reserved.strip()
            channels = [_channel(s) for s in edf.signals]  # ordinary signals: no annotations
        except DiagEcgError:
            raise
        except Exception as e:  # edfio raises ValueError, UnicodeDecodeError... on a corrupt header
            raise SignalFileError(f"{source}: cannot read the EDF header: {e}") from None
        if reserved.startswith("EDF+D"):
            raise SignalFileError(
                f"{source}: an EDF+D (discontinuous) file: its data records are not "
                f"contiguous in time; export one continuous segment (EDF+C) instead"
            )
        if reserved.startswith("EDF+") and not _is_continuous(edf, source):
            raise SignalFileError(
                f"{source}: declares {reserved} but its time-keeping annotations show "
                f"gaps between data records"
            )
        leads = _select_leads(channels, source, notes)
        fs_hz = _common_rate(leads, source)
        n = int(edf.num_data_records) * int(leads[0].signal.samples_per_data_record)
        if n * len(leads) > MAX_RECORD_SAMPLES:
            raise SignalFileError(
                f"{source}: {n} samples x {len(leads)} leads is more than diagecg reads "
                f"({MAX_RECORD_SAMPLES} values); crop the recording first"
            )
        to_mv = [_units_to_mv(c, source) for c in leads]  # every calibration checked before any decoding
        rows = [np.asarray(c.signal.data, dtype=np.float64) * f for c, f in zip(leads, to_mv, strict=True)]
        patient = _patient(edf, reserved, edfio.AnonymizedDateError, notes)
    notes += [f"edfio: {w.message}" for w in caught]
    return record_from_array(
        np.stack(rows),
        fs_hz,
        [c.lead or c.label for c in leads],
        units="mV",
        source=source,
        record_id=path.stem,
        patient=patient,
        warnings=notes,
        quality=quality,
    )


# --- layout ---------------------------------------------------------------------------------------------


def _header_number(raw: bytes, what: str, source: str) -> float:
    return file_number(raw.decode("ascii", errors="replace").strip(), f"EDF header field {what}", source)


def _header_int(raw: bytes, what: str, source: str) -> int:
    value = _header_number(raw, what, source)
    if value != int(value):
        raise HeaderError(f"{source}: EDF header field {what} {value:g} is not an integer")
    return int(value)


def _check_layout(path: Path, source: str) -> None:
    """The file is exactly the header plus the declared data records (checked from the raw header)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        fixed = f.read(HEADER_BYTES)
        if len(fixed) < HEADER_BYTES:
            raise SignalFileError(f"{source}: {size} bytes, shorter than the {HEADER_BYTES}-byte EDF header")
        if fixed[:8] != EDF_VERSION:
            raise SignalFileError(f"{source}: version field {fixed[:8]!r} is not EDF's {EDF_VERSION!r}")
        n_signals = _header_int(fixed[N_SIGNALS_FIELD], "number of signals", source)
        if n_signals < 1:
            raise HeaderError(f"{source}: the EDF header declares {n_signals} signals")
        if HEADER_BYTES * (n_signals + 1) > size:  # checked before reading: 1e9 signals asked for 256 GB
            need = HEADER_BYTES * (n_signals + 1)
            raise SignalFileError(
                f"{source}: the EDF header declares {n_signals:.6g} signals, whose headers "
                f"alone need {need:.6g} bytes; the file has {size}"
            )
        signal_headers = f.read(HEADER_BYTES * n_signals)
    header_bytes = _header_int(fixed[HEADER_BYTES_FIELD], "number of header bytes", source)
    if header_bytes != HEADER_BYTES * (n_signals + 1):
        raise SignalFileError(
            f"{source}: the EDF header declares {header_bytes} header bytes; {n_signals} "
            f"signals need {HEADER_BYTES * (n_signals + 1)}"
        )
    if len(signal_headers) < HEADER_BYTES * n_signals:
        raise SignalFileError(
            f"{source}: {size} bytes: the signal headers of {n_signals} signals are truncated"
        )
    start, width = SAMPLES_PER_RECORD_OFFSET * n_signals, SAMPLES_PER_RECORD_WIDTH
    per_record = [
        _header_int(
            signal_headers[start + width * i : start + width * (i + 1)],
            f"samples per data record of signal {i + 1}",
            source,
        )
        for i in range(n_signals)
    ]
    if min(per_record) < 0:
        raise HeaderError(f"{source}: a negative number of samples per data record {per_record}")
    n_records = _header_int(fixed[N_RECORDS_FIELD], "number of data records", source)
    if n_records == -1:
        raise SignalFileError(
            f"{source}: the number of data records is -1 (a recording that was never "
            f"closed); refusing to infer it from the file size"
        )
    if n_records < 1:
        raise HeaderError(f"{source}: the EDF header declares {n_records} data records")
    duration_s = _header_number(fixed[RECORD_DURATION_FIELD], "duration of a data record", source)
    if duration_s <= 0:
        raise HeaderError(
            f"{source}: data record duration {duration_s:g} s is not positive; the sampling "
            f"rates are undefined"
        )
    record_bytes = SAMPLE_BYTES * sum(per_record)
    expected = header_bytes + n_records * record_bytes
    if size != expected:
        state = "truncated" if size < expected else "followed by data the header does not declare"
        raise SignalFileError(
            f"{source}: {size} bytes, but the header declares {n_records} data records x "
            f"{record_bytes} bytes after {header_bytes} header bytes = {expected} bytes "
            f"({state})"
        )


def _is_continuous(edf: Any, source: str) -> bool:
    try:
        return bool(edf.is_continuous)
    except Exception as e:  # a malformed time-keeping annotation
        raise SignalFileError(f"{source}: cannot read the EDF+ time-keeping annotations: {e}") from None


# --- signals ----------------------------------------------------------------------------------------------


def _lead_name(label: str) -> str | None:
    """The lead a signal label names (``"ECG V1"`` -> ``"V1"``, ``"I"`` -> ``"I"``), None for other channels.

    A negated lead (``"ECG -aVR"``) is kept, so that ``record_from_array`` refuses it by name.
    """
    m = _ECG_TYPE.match(label)
    name = m.group("lead").strip() if m else label
    return name if normalise_lead_name(name).lstrip("-") in LEAD_ALIASES else None


def _channel(signal: Any) -> _Channel:
    label = signal.label.strip()
    return _Channel(
        label=label,
        lead=_lead_name(label),
        fs_hz=float(signal.sampling_frequency),
        dimension=signal.physical_dimension.strip(),
        physical=(signal.physical_min, signal.physical_max),
        digital=(signal.digital_min, signal.digital_max),
        signal=signal,
    )


def _select_leads(channels: list[_Channel], source: str, notes: list[str]) -> list[_Channel]:
    """The ECG lead channels, once all 12 are there; the other channels are dropped with a note."""
    labels = [c.label for c in channels]
    leads = [c for c in channels if c.lead is not None]
    if not leads:
        raise LeadError(
            f"{source}: no ECG lead among the EDF signals {labels} (an EEG or sleep recording?); "
            f"diagecg reads 12-lead ECGs"
        )
    found = {LEAD_ALIASES.get(normalise_lead_name(c.lead or "")) for c in leads}
    missing = [lead for lead in CANONICAL_LEADS if lead not in found]
    if missing:
        raise LeadError(
            f"{source}: missing lead{'s' if len(missing) > 1 else ''} {', '.join(missing)}; the "
            f"EDF signals are {labels}"
        )
    others = [c.label for c in channels if c.lead is None]
    if others:
        notes.append(f"dropped {len(others)} non-ECG channel(s): {', '.join(others)}")
    return leads


def _common_rate(leads: list[_Channel], source: str) -> float:
    rates = {c.fs_hz for c in leads}
    if len(rates) > 1:
        listed = ", ".join(f"{c.lead} {c.fs_hz:g} Hz" for c in leads)
        raise HeaderError(
            f"{source}: the leads have different sampling rates ({listed}); diagecg does not "
            f"resample while reading"
        )
    fs_hz = rates.pop()
    if not (math.isfinite(fs_hz) and MIN_FS_HZ <= fs_hz <= MAX_FS_HZ):
        raise HeaderError(
            f"{source}: sampling rate {fs_hz:g} Hz is not an ECG's (expected {MIN_FS_HZ:g}-{MAX_FS_HZ:g} Hz)"
        )
    return fs_hz


def _units_to_mv(channel: _Channel, source: str) -> float:
    """mV per physical unit, after checking the calibration ranges edfio would otherwise skip."""
    where = f"signal {channel.label!r}"
    (pmin, pmax), (dmin, dmax) = channel.physical, channel.digital
    if not (math.isfinite(pmin) and math.isfinite(pmax)) or pmin == pmax:
        raise HeaderError(f"{source}: {where} has physical range [{pmin:g}, {pmax:g}]: no calibration")
    if dmin >= dmax:
        raise HeaderError(f"{source}: {where} has digital range [{dmin}, {dmax}]: no calibration")
    factor = UNITS_TO_MV.get(channel.dimension.lower())
    if factor is None:
        raise HeaderError(
            f"{source}: {where} has physical dimension {channel.dimension!r}, not a voltage "
            f"(known: uV, mV, V, nV)"
        )
    return factor


# --- patient ----------------------------------------------------------------------------------------------


def _patient(edf: Any, reserved: str, anonymised: type[Exception], notes: list[str]) -> PatientInfo:
    """Sex and age from the EDF+ patient field and start date (plain EDF's field is free text).

    ``anonymised`` is edfio's ``AnonymizedDateError``: a date given as ``X``.
    """
    if not reserved.startswith("EDF+"):
        return PatientInfo()
    patient = edf.patient
    sex = {"M": "male", "F": "female"}.get(patient.sex)
    if patient.sex not in ("M", "F", "X"):
        notes.append(f"EDF+ patient sex {patient.sex!r} is not M/F/X; ignored")
    birthdate = _date(lambda: patient.birthdate, "patient birthdate", anonymised, notes)
    startdate = _date(lambda: edf.startdate, "start date", anonymised, notes)
    age: float | None = None
    if birthdate is not None and startdate is not None:
        years = (
            startdate.year
            - birthdate.year
            - ((startdate.month, startdate.day) < (birthdate.month, birthdate.day))
        )
        age = plausible_patient_value(
            "age_years", float(years), f"{years} (born {birthdate}, recorded {startdate})", notes
        )
    return PatientInfo(age_years=age, sex=sex)


def _date(
    get: Callable[[], object], what: str, anonymised: type[Exception], notes: list[str]
) -> datetime.date | None:
    """A date edfio parses, None when anonymised (``X``) or malformed (with a note)."""
    try:
        value = get()
    except anonymised:
        return None
    except ValueError as e:
        notes.append(f"EDF+ {what} is not a date ({e}); ignored")
        return None
    return value if isinstance(value, datetime.date) else None

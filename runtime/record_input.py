"""What a pipeline takes in, checked at the boundary: a record (a path or an ``EcgRecord``), the patient
overrides of a caller, and the key of a signal that the pipeline's caches are keyed by.

Kept apart from ``runtime.pipeline`` (which answers) and ``runtime.answer`` (which writes the answer
down): a new record type or a new check changes this module only (conventions: validate at the boundary,
completely).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from diagecg.config import QualityConfig
from diagecg.errors import InputError
from diagecg.io import check_record, read_record
from diagecg.types import EcgRecord, PatientInfo

RecordLike = EcgRecord | str | Path


def as_record(record: RecordLike, quality: QualityConfig | None = None) -> EcgRecord:
    """The file at a path read (any format of ``diagecg.formats``), or an ``EcgRecord`` checked as a file
    is (``diagecg.io.check_record``: one a reader returned and nobody changed passes at once; one built
    by hand gets every check).

    Raises:
        InputError: anything else; a bare numpy array is refused with how to wrap it, because it carries
            no sampling rate, units or lead names.
        RecordError: the record fails validation.
    """
    if isinstance(record, EcgRecord):
        return check_record(record, quality)
    if isinstance(record, (str, Path)):
        return read_record(record, quality=quality)
    if hasattr(record, "__array__"):
        raise InputError("a bare array has no sampling rate, units or lead names: wrap it with "
                         "diagecg.record_from_array(signal, fs_hz, lead_names, units='mV')")
    raise InputError(f"record must be a path or a diagecg.EcgRecord, not {type(record).__name__}")


def check_patient(patient: PatientInfo | None) -> PatientInfo | None:
    """Patient overrides from a caller: a ``PatientInfo`` (which validates itself) or None.

    Raises:
        InputError: anything else.
    """
    if patient is not None and not isinstance(patient, PatientInfo):
        raise InputError(f"patient must be a diagecg.types.PatientInfo or None, not {type(patient).__name__}")
    return patient


def signal_key(record: EcgRecord) -> bytes:
    """Digest of what the ECG codes depend on: the signal's bytes, dtype, shape, rate and lead names."""
    h = hashlib.blake2b(digest_size=16)
    signal = record.signal
    h.update(f"{signal.dtype.str}|{signal.shape}|{record.fs_hz!r}|{','.join(record.lead_names)}|".encode())
    h.update(signal.tobytes() if signal.flags.c_contiguous else signal.copy(order="C").tobytes())
    return h.digest()

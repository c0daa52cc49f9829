"""What a pipeline takes in, checked at the boundary: a record (a path or an ``EcgRecord``), the patient
overrides of a caller, the key of a signal that the pipeline's ECG-code cache is keyed by, and the cache
of the per-record checks (:class:`RecordChecks`).

Kept apart from ``runtime.pipeline`` (which answers) and ``runtime.answer`` (which writes the answer
down): a new record type or a new check changes this module only (conventions: validate at the boundary,
completely).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from diagecg.config import QualityConfig
from diagecg.errors import InputError
from diagecg.io import check_record, read_record
from diagecg.quality import dead_leads
from diagecg.record import record_digest
from diagecg.types import EcgRecord, PatientInfo

RecordLike = EcgRecord | str | Path
BoolArray = NDArray[np.bool_]  # (leads,)


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
        raise InputError(
            "a bare array has no sampling rate, units or lead names: wrap it with "
            "diagecg.record_from_array(signal, fs_hz, lead_names, units='mV')"
        )
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


@dataclasses.dataclass(frozen=True)
class _Checked:
    """What the checks concluded about one record: the checked record's fields but its signal (which is
    the caller's, value for value), its validation digest, and its dead leads."""

    fields: dict[str, Any]
    checked: bytes
    dead: BoolArray


class RecordChecks:
    """The per-record checks (``diagecg.io.check_record``: the quality checks of ``diagecg.quality``, and
    ``dead_leads``) of the last ``size`` in-memory records asked about, so that a follow-up question about
    the same ``EcgRecord`` does not run them again, as the pipeline's ECG-code cache spares it the tokenizer.

    The key is what the checks' outcome depends on: the digest ``check_record`` itself uses (the signal's
    bytes, dtype, shape, rate and lead names, and the quality thresholds) and the record's other fields
    (source, id, patient, diagnoses, warnings: they are checked too, and the source is named in the
    warnings). Only the conclusion is kept, never a signal: a hit rebuilds the checked record around the
    caller's own array, so a record is cached only when checking it left its signal as it was (float32
    mV, canonical lead order: every record a reader returns, and most built by hand). Paths are read and
    checked every time (the file may change). Thread-safe; ``size=0`` turns it off.
    """

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"size={size} is invalid: must be >= 0")
        self.size = size
        self._cache: OrderedDict[tuple[bytes, str], _Checked] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, record: RecordLike, quality: QualityConfig) -> tuple[EcgRecord, BoolArray]:
        """``as_record(record, quality)`` and the bool (leads,) mask of its dead leads
        (``diagecg.quality.dead_leads``), from the cache when this record was checked before.

        Raises:
            InputError, RecordError: as ``as_record`` (a record that fails is never cached).
        """
        key = self._key(record, quality)
        if key is None:
            rec = as_record(record, quality)
            return rec, dead_leads(rec.signal, rec.fs_hz, quality)
        assert isinstance(record, EcgRecord)  # _key gives None for anything else
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
        if hit is not None:
            fields: dict[str, Any] = {k: list(v) if isinstance(v, list) else v for k, v in hit.fields.items()}
            rec = EcgRecord(signal=record.signal, **fields)
            rec.checked = hit.checked
            return rec, hit.dead
        rec = check_record(record, quality)
        dead = dead_leads(rec.signal, rec.fs_hz, quality)
        if rec is record or _same_signal(rec.signal, record.signal):
            dead.flags.writeable = False  # shared by every later hit
            # lists copied: the caller's record (rec is record) may change its own later
            fields = {
                f.name: list(v) if isinstance(v := getattr(rec, f.name), list) else v
                for f in dataclasses.fields(rec)
                if f.init and f.name != "signal"
            }
            with self._lock:
                self._cache[key] = _Checked(fields, rec.checked, dead)
                while len(self._cache) > self.size:
                    self._cache.popitem(last=False)
        return rec, dead

    def clear(self) -> None:
        """Forget every record's checks."""
        with self._lock:
            self._cache.clear()

    def _key(self, record: RecordLike, quality: QualityConfig) -> tuple[bytes, str] | None:
        """The cache key of an in-memory record; None when it is not cached (cache off, a path, anything
        that is not an ``EcgRecord`` with an array signal: ``as_record`` says what is wrong)."""
        if not self.size or not isinstance(record, EcgRecord):
            return None
        digest = record_digest(record, quality)
        if not digest:
            return None
        rest = (record.source, record.record_id, record.patient, record.diagnoses, record.warnings)
        return digest, repr(rest)


def _same_signal(checked: np.ndarray, given: np.ndarray) -> bool:
    """Whether checking a record kept its signal value for value (dtype and shape included)."""
    return checked.dtype == given.dtype and checked.shape == given.shape and np.array_equal(checked, given)

"""Read an ECG record into a validated :class:`~diagecg.types.EcgRecord` (float32 mV, canonical leads).

The record path is one straight line: :func:`read_record` asks :mod:`diagecg.formats` which format a
file is (from its content), that format's reader decodes the file with the file's own gain, baseline and
units, and every reader ends in :func:`diagecg.record.record_from_array`, which holds the checks a record
passes. Formats read: WFDB and PhysioNet Challenge records (``diagecg.formats.wfdb``), DICOM, HL7 aECG,
GE MUSE XML, Philips XML and EDF. No resampling happens here (see ``diagecg.preprocess``).

``record_from_array`` and ``check_record`` are exported here too: with ``read_record`` they are the ways
into a validated record.
"""

from __future__ import annotations

from pathlib import Path

from diagecg import formats
from diagecg.config import QualityConfig
from diagecg.errors import RecordError
from diagecg.record import check_record, record_from_array
from diagecg.types import EcgRecord

__all__ = ["check_record", "read_record", "record_from_array"]


def read_record(
    path: str | Path,
    *,
    quality: QualityConfig | None = None,
    fmt: str | None = None,
) -> EcgRecord:
    """Read and validate one ECG record of any supported format.

    Args:
        path: a WFDB record (its ``.hea``, one of its signal files, or the record path without suffix;
            PhysioNet Challenge records, ``.hea`` + ``.mat``, are read the same way), or a DICOM, HL7 aECG,
            GE MUSE XML, Philips XML or EDF file (:mod:`diagecg.formats`).
        quality: thresholds of the signal checks; ``QualityConfig()`` when None.
        fmt: one of ``diagecg.formats.FORMAT_NAMES``; None detects it from the file's content.

    Returns:
        EcgRecord with ``signal`` float32 mV of shape (12, samples) in ``CANONICAL_LEADS`` order,
        ``fs_hz`` as recorded (not resampled), ``patient`` and ``diagnoses`` from the header comments.

    Raises:
        RecordNotFoundError: the header or a signal file does not exist.
        HeaderError: malformed header, missing/zero sampling rate, missing/zero gain, non-voltage units.
        SignalFileError: a signal file outside the record folder, truncated, or of an unsupported format.
        RecordError: a path with a NUL byte, or a file that is not a regular file.
        LeadError: missing, unknown, negated or duplicate leads.
        SignalQualityError: NaN/inf, flat or saturated leads, implausible amplitude, too short.
    """
    if "\x00" in str(path):  # the OS cannot name such a file; pathlib would raise a bare ValueError
        raise RecordError(f"record path {str(path)!r} contains a NUL byte")
    fmt = fmt or formats.detect_format(path)
    return formats.read(path, fmt, quality=quality)

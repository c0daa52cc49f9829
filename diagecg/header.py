"""WFDB header text -> ``WfdbHeader``, and patient features from its comments.

Spec: https://physionet.org/physiotools/wag/header-5.htm. Parsed strictly, by hand: ``wfdb.rdheader``
fills a missing rate (250 Hz) or gain (200) with defaults, which ``diagecg.formats.wfdb`` must refuse.
PhysioNet Challenge 2020/2021 headers add ``#Age:``, ``#Sex:`` and ``#Dx:`` (SNOMED CT) comments.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from diagecg.errors import HeaderError, SignalFileError
from diagecg.types import PATIENT_LIMITS, PatientInfo

# --- header lines ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignalSpec:
    """One signal line of a WFDB header."""

    file_name: str
    fmt: str
    byte_offset: int
    gain: float  # ADC units per physical unit
    baseline: int  # ADC value of 0 physical units
    units: str | None  # None: not given (WFDB then means mV)
    init_value: int | None
    checksum: int | None
    description: str


@dataclass(frozen=True)
class WfdbHeader:
    """The parts of a WFDB header diagecg uses."""

    record_name: str
    fs_hz: float | None
    n_samples: int | None
    signals: tuple[SignalSpec, ...]
    comments: tuple[str, ...]


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_FS_RE = re.compile(rf"^({_NUM})(?:/{_NUM}(?:\({_NUM}\))?)?$")
_FMT_RE = re.compile(r"^(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?$")
_GAIN_RE = re.compile(rf"^({_NUM})(?:\(([-+]?\d+)\))?(?:/(\S+))?$")


def _int(text: str, what: str, source: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise HeaderError(f"{source}: {what} {text!r} is not an integer") from None


def parse_wfdb_header(text: str, source: str = "<header>") -> WfdbHeader:
    """Parse WFDB header text strictly (single-segment records only).

    Raises:
        HeaderError: a malformed line, a multi-segment record, or a signal count that does not match.
    """
    comments: list[str] = []
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            comments.append(line[1:].strip())
        elif line:
            lines.append(line)
    if not lines:
        raise HeaderError(f"{source}: empty header (no record line)")
    fields = lines[0].split()
    name = fields[0]
    if "/" in name:
        raise HeaderError(f"{source}: multi-segment record {name!r} is not supported")
    if len(fields) < 2:
        raise HeaderError(f"{source}: record line {lines[0]!r} lacks the number of signals")
    n_sig = _int(fields[1], "number of signals", source)
    fs_hz: float | None = None
    if len(fields) >= 3:
        m = _FS_RE.match(fields[2])
        if not m:
            raise HeaderError(f"{source}: sampling rate {fields[2]!r} is not a number")
        fs_hz = float(m.group(1))
    n_samples = _int(fields[3], "number of samples", source) if len(fields) >= 4 else None
    if n_samples is not None and n_samples < 0:
        raise HeaderError(f"{source}: negative number of samples {n_samples}")
    signals = [_parse_signal_line(line, source) for line in lines[1:]]
    if n_sig != len(signals):
        raise HeaderError(
            f"{source}: the record line declares {n_sig} signals, the header has {len(signals)} signal lines"
        )
    return WfdbHeader(name, fs_hz, n_samples, tuple(signals), tuple(comments))


def _parse_signal_line(line: str, source: str) -> SignalSpec:
    parts = line.split(maxsplit=8)
    if len(parts) < 2:
        raise HeaderError(f"{source}: signal line {line!r} lacks a format")
    file_name = parts[0]
    m = _FMT_RE.match(parts[1])
    if not m:
        raise HeaderError(f"{source}: signal format {parts[1]!r} is malformed")
    fmt, spf, skew, offset = m.groups()
    if spf not in (None, "1") or skew not in (None, "0"):
        raise SignalFileError(
            f"{source}: signal format {parts[1]!r}: multiple samples per frame and skew are not supported"
        )
    if len(parts) < 3:
        raise HeaderError(
            f"{source}: signal {file_name!r} has no ADC gain; refusing to guess "
            f"(WFDB would assume 200 units/mV)"
        )
    g = _GAIN_RE.match(parts[2])
    if not g:
        raise HeaderError(f"{source}: ADC gain field {parts[2]!r} is malformed")
    gain = float(g.group(1))
    if not (math.isfinite(gain) and gain > 0):
        # a negative gain would invert the lead: no ECG device writes one, and an inverted limb lead
        # changes the diagnosis (axis, sinus P waves), so it is refused rather than applied or ignored
        raise HeaderError(
            f"{source}: ADC gain {parts[2]!r} is not a positive number (zero: an uncalibrated "
            f"signal; negative: an inverted lead); fix the header"
        )
    adc_zero = _int(parts[4], "ADC zero", source) if len(parts) > 4 else 0
    baseline = _int(g.group(2), "baseline", source) if g.group(2) is not None else adc_zero
    return SignalSpec(
        file_name=file_name,
        fmt=fmt,
        byte_offset=int(offset or 0),
        gain=gain,
        baseline=baseline,
        units=g.group(3),
        init_value=_int(parts[5], "initial value", source) if len(parts) > 5 else None,
        checksum=_int(parts[6], "checksum", source) if len(parts) > 6 else None,
        description=parts[8].strip() if len(parts) > 8 else "",
    )


# --- patient info from header comments -----------------------------------------------------------------

_UNKNOWN = {"", "nan", "unknown", "n/a", "na", "none", "?", "-"}
_KEY_VALUE = re.compile(r"^([A-Za-z][A-Za-z ]*?)\s*:\s*(.*)$")
_PLAUSIBLE = {
    "age": PATIENT_LIMITS["age_years"],
    "height": PATIENT_LIMITS["height_cm"],
    "weight": PATIENT_LIMITS["weight_kg"],
}
_LENGTH_TO_CM = {"": 1.0, "cm": 1.0, "m": 100.0, "in": 2.54, "inch": 2.54, "inches": 2.54}
_MASS_TO_KG = {"": 1.0, "kg": 1.0, "g": 1e-3, "lb": 0.45359237, "lbs": 0.45359237}


def _quantity(key: str, value: str, units: dict[str, float] | None, warnings: list[str]) -> float | None:
    if value.strip().lower() in _UNKNOWN:
        return None
    m = re.match(rf"^({_NUM})\s*([A-Za-z]*)\.?$", value.strip())
    unit = m.group(2).lower() if m else ""
    if (
        not m
        or (units is None and unit not in ("", "y", "yr", "yrs", "years"))
        or (units is not None and unit not in units)
    ):
        warnings.append(f"header comment {key}: {value!r} is not understood; ignored")
        return None
    v = float(m.group(1)) * (units[unit] if units else 1.0)
    lo, hi = _PLAUSIBLE[key]
    if not (math.isfinite(v) and lo <= v <= hi):
        warnings.append(f"header comment {key}: {value!r} is outside [{lo:g}, {hi:g}]; ignored")
        return None
    return v


def parse_patient_comments(comments: Sequence[str]) -> tuple[PatientInfo, list[str], list[str]]:
    """Patient features and diagnosis codes from header comments.

    Understands ``age: 81`` / ``sex: female`` (PTB), ``Age: 56`` / ``Sex: Female`` / ``Dx: 426783006,...``
    (PhysioNet Challenge) and ``height: 170 cm`` / ``weight: 80 kg``; other comments are ignored.

    Returns:
        ``(patient, diagnoses, warnings)``.
    """
    fields: dict[str, float | str | None] = {}
    diagnoses: list[str] = []
    warnings: list[str] = []
    for comment in comments:
        m = _KEY_VALUE.match(comment)
        if not m:
            continue
        key, value = m.group(1).strip().lower(), m.group(2).strip()
        if key == "age":
            fields["age_years"] = _quantity("age", value, None, warnings)
        elif key in ("sex", "gender"):
            low = value.lower()
            if low in ("m", "male"):
                fields["sex"] = "male"
            elif low in ("f", "female"):
                fields["sex"] = "female"
            elif low not in _UNKNOWN:
                warnings.append(f"header comment {key}: {value!r} is not male/female; ignored")
        elif key == "height":
            fields["height_cm"] = _quantity("height", value, _LENGTH_TO_CM, warnings)
        elif key == "weight":
            fields["weight_kg"] = _quantity("weight", value, _MASS_TO_KG, warnings)
        elif key == "dx":
            diagnoses.extend(c.strip() for c in value.split(",") if c.strip().lower() not in _UNKNOWN)
    return PatientInfo(**fields), diagnoses, warnings  # type: ignore[arg-type]

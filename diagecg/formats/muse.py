"""GE MUSE / MAC resting ECG XML (root ``<RestingECG>``, GE's ``restecg.dtd``) -> EcgRecord.

A MUSE export holds a ``Median`` waveform (one averaged beat) and a ``Rhythm`` waveform (the
recording, usually 10 s at 500 Hz); the Rhythm waveform is read. Per waveform:

- ``SampleBase`` (Hz) and ``SampleExponent``: the rate is ``SampleBase * 10**SampleExponent``;
- per ``LeadData``: ``LeadID``, ``LeadSampleCountTotal``, ``LeadAmplitudeUnitsPerBit`` (4.88 on GE carts)
  in ``LeadAmplitudeUnits`` (``MICROVOLTS``), and ``WaveFormData``: base64 of little-endian int16
  (``LeadSampleSize`` 2), with ``LeadByteCountTotal`` and ``LeadDataCRC32`` (zlib's CRC-32 of the
  decoded bytes) when the cart wrote them.

MUSE stores 8 leads (I, II, V1-V6); the other limb leads are linear in I and II (Einthoven, Goldberger)
and are derived (``diagecg.leads.derive_limb_leads``) with a warning, as GE's own viewer does. Nothing
about scale or rate is assumed: a missing or zero rate or scale, units that are not a voltage, a size
that disagrees with what the file declares, malformed base64 or a CRC mismatch is refused with one line
naming the file and the lead. Measurements and the machine's diagnosis statements are not read.

The file is parsed with the standard library: expat does not fetch the external ``restecg.dtd`` and
(expat >= 2.4) refuses exponential entity expansion; ``check_file`` has already capped the size.
"""

from __future__ import annotations

import base64
import binascii
import math
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diagecg.config import QualityConfig
from diagecg.errors import HeaderError, SignalFileError
from diagecg.formats import file_number, parse_xml, patient_number, plausible_patient_value
from diagecg.leads import DERIVED_LIMB_LEADS, derive_limb_leads
from diagecg.record import MAX_FS_HZ, MAX_RECORD_SAMPLES, MIN_FS_HZ, UNITS_TO_MV, record_from_array
from diagecg.types import EcgRecord, PatientInfo

# LeadAmplitudeUnits as MUSE spells them -> key of diagecg.record.UNITS_TO_MV
MUSE_UNITS: dict[str, str] = {"MICROVOLTS": "uV", "MILLIVOLTS": "mV", "VOLTS": "V", "NANOVOLTS": "nV"}
# AgeUnits -> years per unit (MUSE gives infants' ages in months, weeks or days)
AGE_UNITS_TO_YEARS: dict[str, float] = {
    "YEARS": 1.0,
    "MONTHS": 1 / 12,
    "WEEKS": 7 / 365.25,
    "DAYS": 1 / 365.25,
    "HOURS": 1 / (24 * 365.25),
}
# height / weight tags -> factor to cm / kg; the metric tag is preferred when both are present
HEIGHT_TAGS: tuple[tuple[str, float], ...] = (("HeightCM", 1.0), ("HeightIN", 2.54))
WEIGHT_TAGS: tuple[tuple[str, float], ...] = (("WeightKG", 1.0), ("WeightLBS", 0.45359237))
SAMPLE_BYTES = 2  # WaveFormData is int16; LeadSampleSize names any other size, which is refused


@dataclass(frozen=True)
class _Lead:
    """One ``LeadData`` element, checked but not yet decoded."""

    lead_id: str
    n_samples: int
    mv_per_bit: float
    base64_text: str  # whitespace removed
    crc32: int | None


def read(path: Path, *, quality: QualityConfig | None = None) -> EcgRecord:
    """Read the Rhythm waveform of a GE MUSE XML file.

    Args:
        path: a MUSE ``RestingECG`` XML file.
        quality: thresholds of the signal checks; ``QualityConfig()`` when None.

    Returns:
        EcgRecord (float32 mV, 12 canonical leads, the file's rate), with ``patient`` from
        ``PatientDemographics`` and ``record_id`` the file stem.

    Raises:
        HeaderError: no Rhythm waveform, or a missing/zero/non-finite rate or scale, unknown units.
        SignalFileError: not well-formed XML, malformed base64, a size or CRC-32 that disagrees with the
            file's own declaration, a sample size other than 2 bytes.
        LeadError, SignalQualityError: from ``diagecg.record.record_from_array``.
    """
    source = str(path)
    warnings: list[str] = []
    root = parse_xml(path, source)
    if root.tag != "RestingECG":
        raise SignalFileError(f"{source}: XML root is <{root.tag}>, not a MUSE <RestingECG>")
    rhythm = _rhythm_waveform(root, source)
    fs_hz = _sampling_rate(rhythm, source, warnings)
    leads = [_lead(element, i, source, warnings) for i, element in enumerate(rhythm.findall("LeadData"))]
    if not leads:
        raise HeaderError(f"{source}: the Rhythm waveform has no LeadData")
    counts = {lead.n_samples for lead in leads}
    if len(counts) > 1:
        raise SignalFileError(
            f"{source}: Rhythm leads differ in length: "
            + ", ".join(f"{lead.lead_id} {lead.n_samples}" for lead in leads)
        )
    n = counts.pop()
    if n * (len(leads) + len(DERIVED_LIMB_LEADS)) > MAX_RECORD_SAMPLES:  # derived leads come on top
        raise SignalFileError(
            f"{source}: declares {n} samples x {len(leads)} leads, more than diagecg reads "
            f"({MAX_RECORD_SAMPLES} values)"
        )
    stored = np.stack([_decode(lead, source) for lead in leads])  # (leads, samples) mV
    signal, names, derived = derive_limb_leads(stored, [lead.lead_id for lead in leads])
    patient = _patient(root.find("PatientDemographics"), warnings)
    return record_from_array(
        signal,
        fs_hz,
        names,
        units="mV",
        source=source,
        record_id=path.stem,
        patient=patient,
        warnings=[*warnings, *derived],
        quality=quality,
    )


# --- waveform -------------------------------------------------------------------------------------------


def _text(element: ET.Element, tag: str) -> str | None:
    """The stripped text of ``element``'s child ``tag``; None when absent or blank."""
    text = element.findtext(tag)
    return text.strip() if text is not None and text.strip() else None


def _number(element: ET.Element, tag: str, where: str, source: str) -> float | None:
    text = _text(element, tag)
    return None if text is None else file_number(text, f"{where} {tag}", source)


def _integer(element: ET.Element, tag: str, where: str, source: str, *, signed: bool = False) -> int | None:
    text = _text(element, tag)
    if text is None:
        return None
    digits = text[1:] if signed and text[:1] in "+-" else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:  # 18 digits: any int64
        kind = "an integer" if signed else "a non-negative integer"
        raise HeaderError(f"{source}: {where} {tag} {text!r} is not {kind}")
    return int(text)


def _rhythm_waveform(root: ET.Element, source: str) -> ET.Element:
    waveforms = root.findall("Waveform")
    rhythm = [w for w in waveforms if (_text(w, "WaveformType") or "").lower() == "rhythm"]
    if not rhythm:
        kinds = [_text(w, "WaveformType") or "?" for w in waveforms]
        raise HeaderError(
            f"{source}: no Rhythm waveform (the file has {kinds or 'no Waveform'}); "
            f"the Median beat alone is not a recording"
        )
    if len(rhythm) > 1:
        raise HeaderError(f"{source}: {len(rhythm)} Rhythm waveforms; diagecg reads a file with one")
    return rhythm[0]


def _sampling_rate(rhythm: ET.Element, source: str, warnings: list[str]) -> float:
    base = _number(rhythm, "SampleBase", "Rhythm waveform", source)
    if base is None:
        raise HeaderError(
            f"{source}: the Rhythm waveform gives no SampleBase (sampling rate); refusing to guess"
        )
    exponent = _integer(rhythm, "SampleExponent", "Rhythm waveform", source, signed=True)
    if exponent is None:
        exponent = 0
        warnings.append("the Rhythm waveform gives no SampleExponent; SampleBase was taken as the rate in Hz")
    try:
        fs_hz = base * 10.0**exponent
    except OverflowError:
        fs_hz = math.inf
    if not (math.isfinite(fs_hz) and fs_hz > 0):
        raise HeaderError(
            f"{source}: sampling rate SampleBase {base:g} x 10^{exponent} Hz is not a positive number"
        )
    if not MIN_FS_HZ <= fs_hz <= MAX_FS_HZ:
        raise HeaderError(
            f"{source}: sampling rate {fs_hz:g} Hz is not an ECG's (expected {MIN_FS_HZ:g}-{MAX_FS_HZ:g} Hz)"
        )
    return fs_hz


def _lead(element: ET.Element, index: int, source: str, warnings: list[str]) -> _Lead:
    """Check one LeadData's declarations (everything but the payload itself)."""
    lead_id = _text(element, "LeadID")
    if lead_id is None:
        raise HeaderError(f"{source}: Rhythm LeadData #{index + 1} has no LeadID")
    where = f"Rhythm lead {lead_id}"
    n = _integer(element, "LeadSampleCountTotal", where, source)
    if not n:
        raise HeaderError(
            f"{source}: {where}: LeadSampleCountTotal is {'missing' if n is None else 0}; the "
            f"length cannot be checked"
        )
    sample_size = _integer(element, "LeadSampleSize", where, source)
    if sample_size is not None and sample_size != SAMPLE_BYTES:
        raise SignalFileError(
            f"{source}: {where}: LeadSampleSize {sample_size} bytes is not supported "
            f"(MUSE writes {SAMPLE_BYTES}-byte samples)"
        )
    per_bit = _number(element, "LeadAmplitudeUnitsPerBit", where, source)
    if per_bit is None or per_bit <= 0:
        state = "missing" if per_bit is None else f"{per_bit:g}"
        raise HeaderError(
            f"{source}: {where}: LeadAmplitudeUnitsPerBit is {state}, not a positive scale; "
            f"refusing to guess (GE carts write 4.88)"
        )
    units = _text(element, "LeadAmplitudeUnits")
    if units is None or units.upper() not in MUSE_UNITS:
        raise HeaderError(
            f"{source}: {where}: LeadAmplitudeUnits {units!r} is not a voltage "
            f"(known: {', '.join(MUSE_UNITS)})"
        )
    byte_count = _integer(element, "LeadByteCountTotal", where, source)
    expected_bytes = n * SAMPLE_BYTES
    if byte_count is not None and byte_count != expected_bytes:
        raise SignalFileError(
            f"{source}: {where}: LeadByteCountTotal {byte_count} disagrees with "
            f"{n} samples x {SAMPLE_BYTES} bytes"
        )
    text = "".join((element.findtext("WaveFormData") or "").split())
    expected_chars = 4 * math.ceil(expected_bytes / 3)
    if len(text) != expected_chars:
        raise SignalFileError(
            f"{source}: {where}: WaveFormData holds {len(text)} base64 characters; "
            f"{n} samples need {expected_chars} (truncated or padded data)"
        )
    baseline = _text(element, "FirstSampleBaseline")
    if baseline not in (None, "0"):
        # every export seen writes 0 and GE documents no other meaning; say so rather than guess an offset
        warnings.append(f"{where}: FirstSampleBaseline {baseline!r} ignored (samples read as stored)")
    # an unsigned 32-bit value; taken modulo 2**32 in case a writer printed it as a signed int32
    crc = _integer(element, "LeadDataCRC32", where, source, signed=True)
    return _Lead(
        lead_id,
        n,
        per_bit * UNITS_TO_MV[MUSE_UNITS[units.upper()].lower()],
        text,
        None if crc is None else crc % 2**32,
    )


def _decode(lead: _Lead, source: str) -> np.ndarray:
    """Base64 -> int16 -> float64 mV, shape (samples,)."""
    where = f"Rhythm lead {lead.lead_id}"
    try:
        raw = base64.b64decode(lead.base64_text, validate=True)
    except binascii.Error as e:
        raise SignalFileError(f"{source}: {where}: WaveFormData is not valid base64 ({e})") from None
    if len(raw) != lead.n_samples * SAMPLE_BYTES:
        raise SignalFileError(
            f"{source}: {where}: WaveFormData decodes to {len(raw)} bytes; "
            f"{lead.n_samples} samples need {lead.n_samples * SAMPLE_BYTES}"
        )
    if lead.crc32 is not None and zlib.crc32(raw) != lead.crc32:
        raise SignalFileError(
            f"{source}: {where}: CRC-32 of WaveFormData is {zlib.crc32(raw)}, the file "
            f"declares {lead.crc32}: the data is corrupt"
        )
    return np.frombuffer(raw, dtype="<i2").astype(np.float64) * lead.mv_per_bit


# --- patient --------------------------------------------------------------------------------------------


def _patient(demo: ET.Element | None, warnings: list[str]) -> PatientInfo:
    """Age, sex, height and weight from ``PatientDemographics`` (None where absent or implausible)."""
    if demo is None:
        return PatientInfo()
    age: float | None = None
    age_value = patient_number(_text(demo, "PatientAge"), "PatientDemographics PatientAge", warnings)
    if age_value is not None:
        units = (_text(demo, "AgeUnits") or "").upper()
        if units in AGE_UNITS_TO_YEARS:
            age = plausible_patient_value(
                "age_years", age_value * AGE_UNITS_TO_YEARS[units], f"{age_value:g} {units}", warnings
            )
        else:
            warnings.append(
                f"PatientDemographics PatientAge {age_value:g} has AgeUnits "
                f"{units or 'missing'!r}, not one of {list(AGE_UNITS_TO_YEARS)}; ignored"
            )
    sex: str | None = None
    gender = (_text(demo, "Gender") or "").upper()
    if gender in ("MALE", "FEMALE"):
        sex = gender.lower()
    elif gender not in ("", "UNKNOWN"):
        warnings.append(f"PatientDemographics Gender {gender!r} is not MALE/FEMALE; ignored")
    height = _measurement(demo, HEIGHT_TAGS, "height_cm", warnings)
    weight = _measurement(demo, WEIGHT_TAGS, "weight_kg", warnings)
    return PatientInfo(age_years=age, sex=sex, height_cm=height, weight_kg=weight)


def _measurement(
    demo: ET.Element, tags: tuple[tuple[str, float], ...], field: str, warnings: list[str]
) -> float | None:
    for tag, factor in tags:
        value = patient_number(_text(demo, tag), f"PatientDemographics {tag}", warnings)
        if value is not None:
            return plausible_patient_value(field, value * factor, f"{tag} {value:g}", warnings)
    return None

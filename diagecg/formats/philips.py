"""Philips resting ECG XML (root ``<restingecgdata>``: SierraECG 1.03, PhilipsECG 1.04-1.04.02) -> EcgRecord.

PageWriter carts, TraceMasterVue and IntelliSpace ECG export this XML (schemas ``SierraECGSchema_1_03.xsd``,
``SierraECGSchema_1_04_01.xsd``; "all amplitudes are in microvolts"). The recording is the base64 text of
``waveforms/parsedwaveforms``, XLI-compressed: one chunk per channel (an 8-byte header, then 10-bit LZW
codes of second-difference residuals), with III, aVR, aVL and aVF stored as residuals from their
prediction by I and II. Carts write 16 chunks; those beyond the named leads (unused front-end channels,
holding only the calibration pulse in the sample files) are ignored, as sierraecg and Philips' viewers do.
That decoding is sierraecg's (``sierraecg.read_file``; https://github.com/sixlettervariables/
sierra-ecg-tools, MIT, the ``philips`` extra); it returns raw 16-bit integers, ignores the amplitude
resolution and checks no size, so everything around it is read and checked here first:

- rate: ``dataacquisition/signalcharacteristics/samplingrate`` (Hz), and ``parsedwaveforms@samplespersecond``
  (1.04) when present, which must agree;
- resolution in uV per bit: ``signalcharacteristics/resolution`` and ``parsedwaveforms@resolution`` (1.04),
  ``signalcharacteristics/signalresolution`` (1.03); present, positive, finite and in agreement;
- ``parsedwaveforms``: Base64, XLI, 16-bit signed samples without ``signaloffset``, lead names from
  ``leadlabels``/``numberofleads`` (1.04) or the 1.03 lead set, the first six being I, II, III, aVR, aVL,
  aVF (sierraecg rebuilds III-aVF from those positions), ``durationperchannel`` (ms) x rate samples;
- the XLI stream: its chunk headers and LZW codes are walked, counting string lengths without building
  them, so each lead's decoded length is checked (and ``leads x samples <= MAX_RECORD_SAMPLES``) before
  sierraecg allocates anything (a crafted LZW stream expands up to ~600-fold). XLI has no checksum: a
  corrupted stream that still decodes to the declared length is left to the signal checks.

A missing, zero, non-finite or disagreeing rate or resolution is refused (sierraecg raises on a missing
rate; it ignores the resolution, the offset and the signedness). Uncompressed files are refused: sierraecg
0.4 fails on them ("assignment destination is read-only"), and no sample exists to check its lead
reconstruction against. A file that sierraecg cannot decode gives one line naming the file.

Philips carts end every channel with a calibration segment, the same in all leads: 100 ms at 0, a 200 ms
1 mV pulse, 100 ms at 0 (in every sample file, and kept in an aECG conversion of one). It is not ECG
and breaks the limb-lead relations the signal checks test, so it is cut off with a warning giving the
pulse's height. Patient age (``years``...``minutes``, or ``dateofbirth`` at the acquisition date; the
``defaultage`` attribute is the analysis default, not the patient's), sex, height and weight are read;
interpretation statements and measurements are not.

XML: the metadata are read with the standard library (expat fetches no external entity or DTD; expat >=
2.4 refuses exponential entity expansion), after ``check_file`` capped the size; sierraecg parses the
file again with ``defusedxml.minidom``, which refuses any entity declaration.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from xml.parsers.expat import ExpatError

import numpy as np

from diagecg.config import QualityConfig
from diagecg.constants import CANONICAL_LEADS
from diagecg.errors import HeaderError, SignalFileError
from diagecg.formats import file_number, import_optional, parse_xml, patient_number, plausible_patient_value
from diagecg.record import MAX_FS_HZ, MAX_RECORD_SAMPLES, MIN_FS_HZ, record_from_array
from diagecg.types import EcgRecord, PatientInfo

# sierraecg names a 1.03 file's channels after its acquisitiontype only for these (else "Channel n")
STANDARD_ACQUISITIONS: tuple[str, ...] = ("STD-12", "10-WIRE")
# sierraecg rebuilds III, aVR, aVL, aVF from the leads at these positions, whatever the labels say
RECONSTRUCTED_ORDER: tuple[str, ...] = CANONICAL_LEADS[:6]
STANDARD_PLACEMENTS: tuple[str, ...] = ("STD", "STD 12+", "STD-12", "UNKNOWN")
XLI_HEADER_BYTES = 8  # int32 LE chunk size, int16 (always 1), int16 LE first value
MAX_XLI_CHUNKS = 16  # carts write 16 (12 leads + 4 unused front-end channels); sierraecg decodes every one
LZW_BITS = 10  # XLI code width; a code above 2**10 - 2 ends a chunk (sierraecg.lzw.LzwDecoder)
CALIBRATION_MV = 1.0  # the pulse Philips carts append to each channel
# age element -> years per unit; a 1.04 file may give the date of birth instead
AGE_UNITS_TO_YEARS: dict[str, float] = {
    "years": 1.0,
    "months": 1 / 12,
    "weeks": 7 / 365.25,
    "days": 1 / 365.25,
    "hours": 1 / (24 * 365.25),
    "minutes": 1 / (60 * 24 * 365.25),
}
HEIGHT_UNITS: tuple[tuple[str, float], ...] = (("cm", 1.0), ("inch", 2.54))
WEIGHT_UNITS: tuple[tuple[str, float], ...] = (("kg", 1.0), ("lb", 0.45359237))
# sierraecg's own errors are RuntimeErrors; a corrupt stream raises IndexError/OverflowError in its decoder,
# FloatingPointError in its int16 lead reconstruction (numpy errstate below), defusedxml a ValueError
_DECODE_ERRORS: tuple[type[Exception], ...] = (
    RuntimeError,
    ValueError,
    IndexError,
    KeyError,
    ArithmeticError,
    TypeError,
    ExpatError,
)


def read(path: Path, *, quality: QualityConfig | None = None) -> EcgRecord:
    """Read the 12-lead recording of a Philips SierraECG / PhilipsECG XML file.

    Args:
        path: a ``restingecgdata`` XML file, already checked by ``diagecg.formats.check_file``.
        quality: thresholds of the signal checks; ``QualityConfig()`` when None.

    Returns:
        EcgRecord (float32 mV, 12 canonical leads, the file's rate, without the trailing calibration
        segment), ``patient`` from ``generalpatientdata``, ``record_id`` the file stem.

    Raises:
        HeaderError: a missing/zero/non-finite/disagreeing rate or resolution, an unusable lead list,
            sample format or duration.
        SignalFileError: not well-formed XML, not Base64 + XLI, truncated or corrupt waveform data, a lead
            count or length that disagrees with the file, sierraecg missing (``pip install
            'diagecg[philips]'``) or unable to decode the file.
        LeadError, SignalQualityError: from ``diagecg.record.record_from_array``.
    """
    source = str(path)
    warnings: list[str] = []
    root = parse_xml(path, source)
    for element in root.iter():  # Philips files use a default namespace; the schema's names are local
        element.tag = element.tag.rsplit("}", 1)[-1]
    if root.tag != "restingecgdata":
        raise SignalFileError(f"{source}: XML root is <{root.tag}>, not a Philips <restingecgdata>")
    # sierraecg takes the first element of each name anywhere below its parent: check those same ones
    characteristics = _first(_first(root, "dataacquisition"), "signalcharacteristics")
    waveforms = _first(root, "parsedwaveforms")
    if characteristics is None or waveforms is None:
        missing = "dataacquisition/signalcharacteristics" if characteristics is None else "parsedwaveforms"
        raise HeaderError(f"{source}: no <{missing}>; not a Philips resting ECG with its waveforms")
    fs_hz = _sampling_rate(characteristics, waveforms, source)
    uv_per_bit = _resolution(characteristics, waveforms, source)
    _check_sample_format(characteristics, waveforms, source)
    labels = _lead_labels(characteristics, waveforms, source)
    n = _samples_per_lead(waveforms, fs_hz, source)
    if n * len(labels) > MAX_RECORD_SAMPLES:
        raise SignalFileError(
            f"{source}: declares {n} samples x {len(labels)} leads, more than diagecg "
            f"reads ({MAX_RECORD_SAMPLES} values)"
        )
    _check_xli_stream(_payload(waveforms, source, _max_payload_bytes(n)), labels, n, source)
    warnings += _placement_warnings(characteristics, len(labels))
    digital = _decode(path, labels, fs_hz, n, source)  # (leads, samples) int64, raw units
    digital, calibration = _cut_calibration(digital, uv_per_bit, fs_hz)
    warnings += calibration
    patient = _patient(root, warnings)
    return record_from_array(
        digital * uv_per_bit,
        fs_hz,
        labels,
        units="uV",
        source=source,
        record_id=path.stem,
        patient=patient,
        warnings=warnings,
        quality=quality,
    )


# --- metadata -------------------------------------------------------------------------------------------


def _first(element: ET.Element | None, tag: str) -> ET.Element | None:
    """The first ``tag`` below ``element`` in document order (minidom's ``getElementsByTagName``)."""
    return None if element is None else next(element.iter(tag), None)


def _text(element: ET.Element | None) -> str | None:
    text = None if element is None else (element.text or "").strip()
    return text or None


def _number(text: str | None, where: str, source: str) -> float | None:
    if text is None or not text.strip():
        return None
    return file_number(text.strip(), where, source)


def _agreeing(values: dict[str, float | None], what: str, source: str, hint: str) -> float:
    """The one positive value the file states for ``what`` (under every name it uses)."""
    given = {where: v for where, v in values.items() if v is not None}
    if not given:
        raise HeaderError(f"{source}: no {what} ({' or '.join(values)}); refusing to guess{hint}")
    for where, value in given.items():
        if value <= 0:
            raise HeaderError(f"{source}: {what} {where} is {value:g}, not a positive number")
    if len(set(given.values())) > 1:
        raise HeaderError(
            f"{source}: disagreeing {what}: " + ", ".join(f"{where} {v:g}" for where, v in given.items())
        )
    return next(iter(given.values()))


def _sampling_rate(characteristics: ET.Element, waveforms: ET.Element, source: str) -> float:
    stated = _number(_text(_first(characteristics, "samplingrate")), "samplingrate", source)
    if stated is None:  # sierraecg reads this one (it would raise MissingXmlElementError)
        raise HeaderError(f"{source}: signalcharacteristics gives no samplingrate; refusing to guess")
    fs_hz = _agreeing(
        {
            "signalcharacteristics/samplingrate": stated,
            "parsedwaveforms@samplespersecond": _number(
                waveforms.get("samplespersecond"), "samplespersecond", source
            ),
        },
        "sampling rate",
        source,
        "",
    )
    if not MIN_FS_HZ <= fs_hz <= MAX_FS_HZ:
        raise HeaderError(
            f"{source}: sampling rate {fs_hz:g} Hz is not an ECG's (expected {MIN_FS_HZ:g}-{MAX_FS_HZ:g} Hz)"
        )
    return fs_hz


def _resolution(characteristics: ET.Element, waveforms: ET.Element, source: str) -> float:
    """Microvolts per bit: the 1.04 element and attribute, or the 1.03 element."""
    names = {
        "signalcharacteristics/resolution": _text(_first(characteristics, "resolution")),
        "signalcharacteristics/signalresolution": _text(_first(characteristics, "signalresolution")),
        "parsedwaveforms@resolution": waveforms.get("resolution"),
    }
    return _agreeing(
        {where: _number(text, where, source) for where, text in names.items()},
        "amplitude resolution (uV per bit)",
        source,
        " (Philips carts write 5)",
    )


def _check_sample_format(characteristics: ET.Element, waveforms: ET.Element, source: str) -> None:
    """Base64 + XLI, 16-bit signed samples and no offset: the only stream sierraecg decodes correctly."""
    encoding = waveforms.get("dataencoding")
    if encoding != "Base64":
        raise SignalFileError(
            f"{source}: parsedwaveforms dataencoding {encoding!r} is not supported (diagecg reads Base64)"
        )
    if waveforms.get("compressflag") is not None:  # 1.03
        method = waveforms.get("compressmethod") if waveforms.get("compressflag") == "True" else None
    else:
        method = waveforms.get("compression")
    if method != "XLI":
        raise SignalFileError(
            f"{source}: parsedwaveforms compression is {method or 'none'!r}; diagecg reads "
            f"XLI-compressed files (what carts write), not uncompressed ones"
        )
    bits = waveforms.get("bitspersample", waveforms.get("nbitspersample"))
    if bits is not None and bits.strip() != "16":
        raise SignalFileError(
            f"{source}: parsedwaveforms stores {bits.strip()}-bit samples; XLI holds 16-bit ones"
        )
    signed = waveforms.get("signalsigned", _text(_first(characteristics, "signalsigned")))
    if signed is not None and signed.strip() != "True":
        raise HeaderError(f"{source}: signalsigned is {signed.strip()!r}; diagecg reads signed samples only")
    offsets = {
        "parsedwaveforms@signaloffset": waveforms.get("signaloffset"),
        "signalcharacteristics/signaloffset": _text(_first(characteristics, "signaloffset")),
    }
    for where, text in offsets.items():
        offset = _number(text, where, source)
        if offset:  # the schema says subtract it; no file with one shows whether before III-aVF are rebuilt
            raise HeaderError(
                f"{source}: {where} is {offset:g}; files with a signal offset are not supported"
            )


def _lead_labels(characteristics: ET.Element, waveforms: ET.Element, source: str) -> list[str]:
    """The lead names sierraecg will give the decoded chunks, in stream order."""
    text = waveforms.get("leadlabels", "")
    if text:  # 1.04: both attributes are required
        count = _number(waveforms.get("numberofleads"), "parsedwaveforms@numberofleads", source)
        labels = text.split()
        if count is None or count != int(count) or not 0 < count <= len(labels):
            raise HeaderError(
                f"{source}: parsedwaveforms numberofleads {waveforms.get('numberofleads')!r} "
                f"does not fit leadlabels {text!r}"
            )
        labels = labels[: int(count)]
    else:  # 1.03: named by the acquisition type
        acquisition = _text(_first(characteristics, "acquisitiontype"))
        count = _number(
            _text(_first(characteristics, "numberchannelsallocated")), "numberchannelsallocated", source
        )
        if acquisition not in STANDARD_ACQUISITIONS:
            raise HeaderError(
                f"{source}: no leadlabels and acquisitiontype {acquisition!r}: the leads are "
                f"unnamed (known for {', '.join(STANDARD_ACQUISITIONS)})"
            )
        if count != len(CANONICAL_LEADS):
            raise HeaderError(
                f"{source}: a {acquisition} acquisition with numberchannelsallocated "
                f"{count if count is None else f'{count:g}'}; expected {len(CANONICAL_LEADS)}"
            )
        labels = list(CANONICAL_LEADS)
    if tuple(labels[: len(RECONSTRUCTED_ORDER)]) != RECONSTRUCTED_ORDER:
        raise HeaderError(
            f"{source}: leads {' '.join(labels)}; XLI decoding rebuilds III-aVF from the first "
            f"six, which must be {' '.join(RECONSTRUCTED_ORDER)}"
        )
    return labels


def _samples_per_lead(waveforms: ET.Element, fs_hz: float, source: str) -> int:
    text = (waveforms.get("durationperchannel") or "").strip()
    if not (text.isascii() and text.isdigit()) or int(text) == 0:
        raise HeaderError(
            f"{source}: parsedwaveforms durationperchannel {text or 'missing'!r} is not a "
            f"positive number of milliseconds"
        )
    n = int(text) * fs_hz / 1000
    if abs(n - round(n)) > 1e-6:
        raise HeaderError(
            f"{source}: durationperchannel {text} ms at {fs_hz:g} Hz is {n:g} samples, not a whole number"
        )
    return round(n)


def _placement_warnings(characteristics: ET.Element, n_leads: int) -> list[str]:
    notes: list[str] = []
    placement = (
        _text(_first(characteristics, "electrodeplacement"))  # 1.04
        or _text(_first(characteristics, "leadset"))
    )  # 1.03
    if placement is not None and placement.upper() not in STANDARD_PLACEMENTS:
        notes.append(
            f"electrode placement {placement!r}, not the standard one: limb leads (or all of them, "
            f"for EASI) differ from a standard 12-lead ECG"
        )
    derived = _text(_first(characteristics, "derivedleads"))
    if derived:
        notes.append(f"the cart derived leads {derived} rather than recording them")
    valid = _text(_first(characteristics, "numberchannelsvalid"))
    if valid is not None and valid.isdigit() and int(valid) < n_leads:
        notes.append(f"the cart marks {valid} of {n_leads} channels valid")
    return notes


# --- waveform -------------------------------------------------------------------------------------------


def _max_payload_bytes(n: int) -> int:
    """The most ``MAX_XLI_CHUNKS`` chunks of ``n`` samples take: LZW codes are 10 bits per byte at best,
    so a chunk of n 16-bit samples is under 2.5 n bytes plus its header."""
    return MAX_XLI_CHUNKS * (XLI_HEADER_BYTES + math.ceil(2.5 * n) + 16)


def _payload(waveforms: ET.Element, source: str, most: int) -> bytes:
    raw = waveforms.text or ""
    if len(raw) > 2 * most + (1 << 20):  # base64: 4/3 of the bytes, plus line breaks; checked before decoding
        raise SignalFileError(
            f"{source}: parsedwaveforms holds {len(raw)} characters; {MAX_XLI_CHUNKS} XLI "
            f"chunks take at most {most} bytes: corrupt or crafted"
        )
    text = "".join(raw.split())
    if not text:
        raise SignalFileError(f"{source}: parsedwaveforms holds no data")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise SignalFileError(f"{source}: parsedwaveforms is not valid base64 ({e})") from None


def _lzw_decoded_bytes(chunk: bytes) -> int | None:
    """How many bytes ``sierraecg.lzw.LzwDecoder(chunk, bits=10)`` yields, counted from its dictionary's
    string lengths without building the strings; None where the decoder would fail (a code it has no
    string for at the start)."""
    max_code = (1 << LZW_BITS) - 2
    lengths: dict[int, int] = {}  # code >= 256 -> length of its string; codes < 256 are one byte
    previous = 0  # length of the previous string; 0 before the first
    next_code, total, buffer, n_bits = 256, 0, 0, 0
    for byte in chunk:
        buffer, n_bits = (buffer << 8) | byte, n_bits + 8
        while n_bits >= LZW_BITS:  # codes are read most significant bit first
            n_bits -= LZW_BITS
            code = buffer >> n_bits
            buffer &= (1 << n_bits) - 1
            if code > max_code:
                return total
            length = 1 if code < 256 else lengths.get(code)
            if length is None:  # the LZW "code not yet defined" case: previous + its first byte
                if previous == 0:
                    return None
                length = lengths[code] = previous + 1
            if previous and next_code <= max_code:
                lengths[next_code] = previous + 1
                next_code += 1
            previous = length
            total += length
    return total


def _check_xli_stream(payload: bytes, labels: list[str], n: int, source: str) -> None:
    """Every chunk is complete and each named lead's decodes to ``n`` samples (checked before decoding
    anything). Carts write 16 chunks; the ones beyond the named leads (unused front-end channels holding
    only the calibration pulse in the sample files) are ignored, as sierraecg and Philips' viewers do."""
    counts: list[int | None] = []
    offset = 0
    # a longer payload is refused before the (pure Python) walk and sierraecg's decoding of every chunk
    most = _max_payload_bytes(n)
    if len(payload) > most:
        raise SignalFileError(
            f"{source}: the waveform data holds {len(payload)} bytes; {MAX_XLI_CHUNKS} "
            f"XLI chunks of {n} samples take at most {most}: corrupt or crafted"
        )
    while offset < len(payload):
        if len(counts) == MAX_XLI_CHUNKS:
            raise SignalFileError(
                f"{source}: the waveform data holds more than {MAX_XLI_CHUNKS} XLI chunks "
                f"(carts write 16): corrupt or crafted"
            )
        start = offset + XLI_HEADER_BYTES
        size = int.from_bytes(payload[offset : offset + 4], "little", signed=True)
        if start > len(payload) or size < 0 or start + size > len(payload):
            lead = labels[len(counts)] if len(counts) < len(labels) else "unnamed"
            raise SignalFileError(
                f"{source}: XLI chunk {len(counts) + 1} (lead {lead}) runs past the end of "
                f"the waveform data: truncated or corrupt"
            )
        decoded = _lzw_decoded_bytes(payload[start : start + size])
        counts.append(None if decoded is None else (decoded + 1) // 2)  # sierraecg pads an odd byte
        offset = start + size
    if len(counts) < len(labels):
        raise SignalFileError(
            f"{source}: the waveform data holds {len(counts)} leads; leadlabels names "
            f"{len(labels)} ({' '.join(labels)})"
        )
    for label, count in zip(labels, counts, strict=False):
        if count != n:
            state = "cannot be decoded" if count is None else f"decodes to {count} samples"
            raise SignalFileError(
                f"{source}: lead {label} {state}; durationperchannel declares {n}: the "
                f"waveform data is corrupt"
            )
    for k, count in enumerate(counts[len(labels) :], len(labels) + 1):
        if count is not None and count > n:  # sierraecg decodes the unnamed chunks too
            raise SignalFileError(
                f"{source}: XLI chunk {k} decodes to {count} samples, more than the {n} of "
                f"durationperchannel: corrupt or crafted"
            )


def _decode(path: Path, labels: list[str], fs_hz: float, n: int, source: str) -> np.ndarray:
    """sierraecg's decoding, shape (leads, samples) int64 in the file's units."""
    sierraecg = import_optional("sierraecg", "philips", "Philips SierraECG XML files", source)
    try:
        with np.errstate(over="raise"):  # its int16 reconstruction of III-aVF would wrap silently
            ecg: Any = sierraecg.read_file(str(path))
    except _DECODE_ERRORS as e:
        raise SignalFileError(
            f"{source}: sierraecg cannot decode the file: {type(e).__name__}: {' '.join(str(e).split())}"
        ) from None
    names = [str(lead.label) for lead in ecg.leads]
    if names != labels or {int(lead.sampling_freq) for lead in ecg.leads} != {round(fs_hz)}:
        raise SignalFileError(
            f"{source}: sierraecg read leads {names} at "
            f"{sorted({lead.sampling_freq for lead in ecg.leads})} Hz; the file declares "
            f"{labels} at {fs_hz:g} Hz"
        )
    lengths = {len(lead.samples) for lead in ecg.leads}
    if lengths != {n}:
        raise SignalFileError(f"{source}: sierraecg decoded {sorted(lengths)} samples per lead; expected {n}")
    return np.stack([np.asarray(lead.samples, dtype=np.int64) for lead in ecg.leads])


def _cut_calibration(digital: np.ndarray, uv_per_bit: float, fs_hz: float) -> tuple[np.ndarray, list[str]]:
    """Drop the trailing samples that are the same in every lead when they hold the calibration pulse.

    Real ECG leads are never all equal (III = II - I); the run is cut only when it holds a nonzero pulse
    and leaves at least half of the recording.
    """
    same = (digital == digital[0]).all(axis=0)  # (samples,)
    start = digital.shape[1] - int(np.argmin(same[::-1])) if not same.all() else 0
    pulse = digital[0, start:]
    if not pulse.any() or start < digital.shape[1] / 2:
        return digital, []
    height_mv = float(np.max(np.abs(pulse))) * uv_per_bit / 1000
    off = (
        ""
        if math.isclose(height_mv, CALIBRATION_MV, rel_tol=0.02)
        else (f", not the {CALIBRATION_MV:g} mV carts write: check the amplitude resolution")
    )
    n_cut = digital.shape[1] - start
    return digital[:, :start], [
        f"dropped the last {n_cut} samples ({n_cut / fs_hz:.2f} s), the cart's "
        f"calibration segment: the same in every lead, a {height_mv:.2f} mV "
        f"pulse{off}"
    ]


# --- patient --------------------------------------------------------------------------------------------


def _patient(root: ET.Element, warnings: list[str]) -> PatientInfo:
    """Age, sex, height and weight from ``patient/generalpatientdata`` (None where absent or implausible)."""
    general = root.find("patient/generalpatientdata")
    if general is None:
        return PatientInfo()
    sex: str | None = None
    written = _text(general.find("sex")) or "Unknown"
    if written in ("Male", "Female"):
        sex = written.lower()
    elif written != "Unknown":
        warnings.append(f"patient sex {written!r} is not Male/Female/Unknown; ignored")
    return PatientInfo(
        age_years=_age(general.find("age"), root, warnings),
        sex=sex,
        height_cm=_measurement(general.find("height"), HEIGHT_UNITS, "height_cm", warnings),
        weight_kg=_measurement(general.find("weight"), WEIGHT_UNITS, "weight_kg", warnings),
    )


def _age(age: ET.Element | None, root: ET.Element, warnings: list[str]) -> float | None:
    if age is None:
        return None
    for unit, years_per_unit in AGE_UNITS_TO_YEARS.items():
        value = patient_number(_text(age.find(unit)), f"patient age {unit}", warnings)
        if value is not None:
            return plausible_patient_value("age_years", value * years_per_unit, f"{value:g} {unit}", warnings)
    birth_text = _text(age.find("dateofbirth"))
    if birth_text is None:
        return None
    acquisition = root.find("dataacquisition")
    recorded_text = None if acquisition is None else acquisition.get("date")
    try:
        birth = datetime.date.fromisoformat(birth_text)
        recorded = datetime.date.fromisoformat(recorded_text or "")
    except ValueError:
        warnings.append(f"patient dateofbirth {birth_text!r} with acquisition date {recorded_text!r}: no age")
        return None
    years = recorded.year - birth.year - ((recorded.month, recorded.day) < (birth.month, birth.day))
    return plausible_patient_value(
        "age_years", float(years), f"{years} (born {birth}, recorded {recorded})", warnings
    )


def _measurement(
    element: ET.Element | None, units: tuple[tuple[str, float], ...], field: str, warnings: list[str]
) -> float | None:
    if element is None:
        return None
    for unit, factor in units:
        value = patient_number(_text(element.find(unit)), f"patient {element.tag} {unit}", warnings)
        if value is not None:
            return plausible_patient_value(field, value * factor, f"{value:g} {unit}", warnings)
    return None

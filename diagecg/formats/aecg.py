"""HL7 v3 annotated ECG (aECG) XML, the format of ECGs in FDA submissions -> EcgRecord.

Spec: HL7 Version 3 Standard: Regulated Studies - Annotated ECG, Release 1 (2004) and the HL7 aECG
Implementation Guide (final, 21 March 2005). An ``AnnotatedECG`` (namespace ``urn:hl7-org:v3``) holds
``component/series`` elements; the RHYTHM series carries ``component/sequenceSet`` elements of
simultaneously recorded ``component/sequence``: one time sequence (``TIME_ABSOLUTE``: ``GLIST_TS``, or
``TIME_RELATIVE``: ``GLIST_PQ``) whose ``increment`` is the sampling interval, and one ``SLIST_PQ`` per
lead (code ``MDC_ECG_LEAD_*``) whose value is ``origin + scale x digit``. Median beats are
``series/derivation/derivedSeries`` and are not read.

The XML is parsed by the standard library after ``diagecg.formats.check_file`` bounded its size: expat
(>= 2.4) stops entity-expansion bombs and ElementTree fetches no external entity or DTD.
"""

from __future__ import annotations

import math
import warnings as pywarnings
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path

import numpy as np

from diagecg.config import QualityConfig
from diagecg.errors import HeaderError, SignalFileError
from diagecg.formats import parse_xml, plausible_patient_value
from diagecg.leads import derive_limb_leads
from diagecg.record import MAX_RECORD_SAMPLES, UNITS_TO_MV, record_from_array
from diagecg.types import EcgRecord, PatientInfo

XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
TIME_CODES: tuple[str, ...] = ("TIME_ABSOLUTE", "TIME_RELATIVE")
RHYTHM_CODE = "RHYTHM"
MEDIAN_CODE = "REPRESENTATIVE_BEAT"  # a median beat: one averaged complex, never a recording of the rhythm
# UCUM time units of a sampling increment -> seconds
SECONDS: dict[str, float] = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
# LOINC codes of subject observations (controlVariable/relatedObservation) -> PatientInfo field, and the
# UCUM units each may be written in -> factor to the field's unit
OBSERVATIONS: dict[str, tuple[str, dict[str, float]]] = {
    "21612-7": ("age_years", {"a": 1.0, "mo": 1 / 12, "wk": 7 / 365.25, "d": 1 / 365.25}),  # reported age
    "8302-2": ("height_cm", {"cm": 1.0, "m": 100.0, "[in_i]": 2.54}),  # body height
    "29463-7": ("weight_kg", {"kg": 1.0, "g": 1e-3, "[lb_av]": 0.45359237}),  # body weight
}
_SEXES = {"M": "male", "F": "female"}


def read(path: Path, *, quality: QualityConfig | None = None) -> EcgRecord:
    """Read an HL7 aECG XML file.

    Args:
        path: an XML file whose root is ``AnnotatedECG``, already checked by ``diagecg.formats.check_file``.
        quality: thresholds of the signal checks; ``QualityConfig()`` when None.

    Returns:
        EcgRecord (float32 mV, (12, samples), canonical lead order) of the rhythm sequence set, with
        ``patient`` from the subject's demographics and observations and ``record_id`` the file stem.

    Raises:
        SignalFileError: malformed XML, not an aECG, no rhythm waveforms, non-integer digits, leads of
            different lengths, too many samples.
        HeaderError: a missing or invalid sampling increment, origin, scale or unit.
        LeadError: the rhythm lacks leads.
        SignalQualityError: see ``diagecg.quality.check_signal``.
    """
    source = str(path)
    root = parse_xml(path, source)
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    if root.tag != f"{ns}AnnotatedECG":
        raise SignalFileError(f"{source}: XML root <{root.tag.removeprefix(ns)}> is not an HL7 AnnotatedECG")
    sequence_set, warnings = _rhythm_sequence_set(root, ns, source)
    fs_hz = _sampling_rate(sequence_set, ns, source)
    mv, names = _lead_signals(sequence_set, ns, source)
    mv, names, derive_warnings = derive_limb_leads(mv, names)
    patient, patient_warnings = _patient(root, ns)
    return record_from_array(
        mv,
        fs_hz,
        names,
        units="mV",
        source=source,
        record_id=path.stem,
        patient=patient,
        warnings=[*warnings, *derive_warnings, *patient_warnings],
        quality=quality,
    )


# --- waveforms ----------------------------------------------------------------------------------------


def _code(element: ET.Element, ns: str) -> str:
    code = element.find(f"{ns}code")
    return "" if code is None else code.get("code", "").strip()


def _sequences(sequence_set: ET.Element, ns: str) -> list[ET.Element]:
    return sequence_set.findall(f"{ns}component/{ns}sequence")


def _n_values(text: str | None) -> int:
    """How many whitespace-separated values ``text`` holds, without splitting it (bounded memory)."""
    if not text:
        return 0
    blank = np.frombuffer(text.encode("utf-8"), dtype=np.uint8) <= 32
    return int(~blank[0]) + int(np.count_nonzero(blank[:-1] & ~blank[1:]))


def _rhythm_sequence_set(root: ET.Element, ns: str, source: str) -> tuple[ET.Element, list[str]]:
    """The sequence set to read: of a RHYTHM series first, then the most leads, then the longest; a
    REPRESENTATIVE_BEAT series (a median beat) is never read."""
    candidates: list[tuple[tuple[bool, int, int], str, ET.Element]] = []
    medians: list[str] = []
    for i, series in enumerate(root.findall(f"{ns}component/{ns}series")):
        series_code = _code(series, ns) or "uncoded"
        for j, sequence_set in enumerate(series.findall(f"{ns}component/{ns}sequenceSet")):
            leads = [s for s in _sequences(sequence_set, ns) if _code(s, ns) not in TIME_CODES]
            length = max((_n_values(s.findtext(f"{ns}value/{ns}digits")) for s in leads), default=0)
            label = (
                f"series {i + 1} {series_code!r} sequence set {j + 1} ({len(leads)} leads x {length} samples)"
            )
            if series_code == MEDIAN_CODE:
                medians.append(label)
            else:
                candidates.append(((series_code == RHYTHM_CODE, len(leads), length), label, sequence_set))
    if not candidates and medians:
        raise SignalFileError(
            f"{source}: the AnnotatedECG holds only a representative (median) beat series "
            f"({MEDIAN_CODE}), no rhythm strip: one averaged beat is not a recording of "
            f"the rhythm"
        )
    if not candidates:
        raise SignalFileError(
            f"{source}: the AnnotatedECG holds no waveform series (component/series/component/sequenceSet)"
        )
    rank, label, chosen = max(candidates, key=lambda c: c[0])
    if not rank[1]:
        raise SignalFileError(f"{source}: the AnnotatedECG's waveform series hold no lead sequences")
    warnings = []
    others = [c[1] for c in candidates if c[2] is not chosen]
    if others or medians:
        ignored = sorted([*others, *medians], key=lambda text: int(text.split()[1]))
        warnings.append(f"read {label}; ignored {', '.join(ignored)}")
    return chosen, warnings


def _sampling_rate(sequence_set: ET.Element, ns: str, source: str) -> float:
    times = [s for s in _sequences(sequence_set, ns) if _code(s, ns) in TIME_CODES]
    if not times:
        raise HeaderError(
            f"{source}: the rhythm sequence set has no {' or '.join(TIME_CODES)} sequence; "
            f"the sampling rate is unknown"
        )
    increment = times[0].find(f"{ns}value/{ns}increment")
    if increment is None:
        raise HeaderError(
            f"{source}: the {_code(times[0], ns)} sequence has no increment (sampling "
            f"interval); refusing to guess the sampling rate"
        )
    value, unit = increment.get("value"), (increment.get("unit") or "").strip()
    step = _finite(value)
    if unit not in SECONDS:
        raise HeaderError(
            f"{source}: sampling increment unit {unit!r} is not a time unit (known: {', '.join(SECONDS)})"
        )
    if step is None or not step > 0:
        raise HeaderError(f"{source}: sampling increment {value!r} {unit} must be a positive number")
    # 9 significant digits: 1 / 0.002 s is 500 Hz, not 499.99999999999994
    return float(f"{1.0 / (step * SECONDS[unit]):.9g}")


def _quantity_mv(sequence: ET.Element, ns: str, part: str, lead: str, source: str) -> float:
    """The ``origin`` or ``scale`` of a lead's SLIST_PQ, in mV."""
    element = sequence.find(f"{ns}value/{ns}{part}")
    if element is None:
        raise HeaderError(f"{source}: lead {lead} has no {part}; refusing to guess")
    raw, unit = element.get("value"), (element.get("unit") or "").strip()
    value = _finite(raw)
    if value is None or (part == "scale" and not value > 0):
        need = "a positive number" if part == "scale" else "a finite number"
        raise HeaderError(f"{source}: lead {lead} has {part} {raw!r}; it must be {need}")
    factor = UNITS_TO_MV.get(unit.lower())
    if factor is None:
        raise HeaderError(
            f"{source}: lead {lead} has {part} unit {unit!r}, not a voltage (known: mV, uV, V, nV)"
        )
    return value * factor


def _lead_signals(sequence_set: ET.Element, ns: str, source: str) -> tuple[np.ndarray, list[str]]:
    """Every lead sequence in mV, float64 (leads, samples), and the lead codes; sizes checked first."""
    leads = [s for s in _sequences(sequence_set, ns) if _code(s, ns) not in TIME_CODES]
    names: list[str] = []
    texts: list[str] = []
    counts: list[int] = []
    for k, sequence in enumerate(leads):
        name = _code(sequence, ns) or f"<sequence {k + 1} without code>"
        value = sequence.find(f"{ns}value")
        kind = None if value is None else value.get(XSI_TYPE, "")
        if kind != "SLIST_PQ":
            raise SignalFileError(
                f"{source}: lead {name} has a value of type {kind!r}; diagecg reads "
                f"SLIST_PQ (origin + scale x digits)"
            )
        text = sequence.findtext(f"{ns}value/{ns}digits") or ""
        names.append(name)
        texts.append(text)
        counts.append(_n_values(text))
    n = counts[0]
    if n == 0:
        raise SignalFileError(f"{source}: lead {names[0]} has no digits")
    if any(c != n for c in counts):
        lengths = ", ".join(f"{name} {c}" for name, c in zip(names, counts, strict=True))
        raise SignalFileError(
            f"{source}: the leads of the rhythm hold different numbers of samples "
            f"({lengths}); a sequence set must be recorded simultaneously"
        )
    if n * len(leads) > MAX_RECORD_SAMPLES:
        raise SignalFileError(
            f"{source}: {len(leads)} leads x {n} samples is more than diagecg reads "
            f"({MAX_RECORD_SAMPLES} values); crop the record first"
        )
    out = np.empty((len(leads), n), dtype=np.float64)
    for k, (sequence, name, text) in enumerate(zip(leads, names, texts, strict=True)):
        origin = _quantity_mv(sequence, ns, "origin", name, source)
        scale = _quantity_mv(sequence, ns, "scale", name, source)
        out[k] = origin + scale * _digits(text, n, name, source)
    return out, names


def _digits(text: str, n: int, lead: str, source: str) -> np.ndarray:
    """``n`` integers from a digits text, int64; anything else is refused."""
    with pywarnings.catch_warnings():
        # numpy warns (DeprecationWarning) and returns what it parsed when the text has a non-number
        pywarnings.simplefilter("error", DeprecationWarning)
        try:
            values = np.fromstring(text, dtype=np.int64, sep=" ")
        except (ValueError, DeprecationWarning):
            values = np.empty(0, dtype=np.int64)
    if values.size != n:
        raise SignalFileError(
            f"{source}: the digits of lead {lead} are not {n} whitespace-separated integers"
        )
    return values


def _finite(raw: str | None) -> float | None:
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# --- patient ------------------------------------------------------------------------------------------


def _date(ts: str | None) -> date | None:
    """The date of an HL7 TS value (``YYYYMMDD[hhmm[ss[.sss]]][+zzzz]``)."""
    if not ts or len(ts) < 8 or not ts[:8].isdigit():
        return None
    try:
        return date(int(ts[:4]), int(ts[4:6]), int(ts[6:8]))
    except ValueError:
        return None


def _ecg_date(root: ET.Element, ns: str) -> date | None:
    for part in ("center", "low"):
        element = root.find(f"{ns}effectiveTime/{ns}{part}")
        if element is not None and _date(element.get("value")):
            return _date(element.get("value"))
    return None


def _patient(root: ET.Element, ns: str) -> tuple[PatientInfo, list[str]]:
    """Sex and birth date of ``subjectDemographicPerson``; reported age, height and weight from the
    AnnotatedECG's ``controlVariable/relatedObservation`` (LOINC coded). A reported age is preferred to
    one computed from the birth date; implausible values are warned about and left unset."""
    warnings: list[str] = []
    fields: dict[str, float | str | None] = {}
    for observation in root.findall(f"{ns}controlVariable/{ns}relatedObservation"):
        entry = OBSERVATIONS.get(_code(observation, ns))
        value = observation.find(f"{ns}value")
        if entry is None or value is None:
            continue
        field, units = entry
        raw, unit = value.get("value"), (value.get("unit") or "").strip()
        number = _finite(raw)
        if number is None or unit not in units:
            warnings.append(
                f"subject observation {field.split('_')[0]} {raw!r} {unit!r} is not understood "
                f"(units: {', '.join(units)}); ignored"
            )
            continue
        fields[field] = plausible_patient_value(field, number * units[unit], f"{raw} {unit}", warnings)
    person = root.find(f".//{ns}subjectDemographicPerson")
    if person is not None:
        gender = person.find(f"{ns}administrativeGenderCode")
        code = "" if gender is None else gender.get("code", "").strip().upper()
        if code in _SEXES:
            fields["sex"] = _SEXES[code]
        elif code not in ("", "UN"):
            warnings.append(f"administrativeGenderCode {code!r} is not M or F; ignored")
        birth_time = person.find(f"{ns}birthTime")
        birth = _date(None if birth_time is None else birth_time.get("value"))
        ecg_day = _ecg_date(root, ns)
        if birth and ecg_day:
            age = _years_between(birth, ecg_day)
            reported = fields.get("age_years")
            if "age_years" not in fields:
                fields["age_years"] = plausible_patient_value("age_years", age, f"born {birth}", warnings)
            elif isinstance(reported, float) and abs(reported - age) > 1:
                warnings.append(
                    f"reported age {reported:g} disagrees with the birth date {birth} "
                    f"(age {age:g} at the ECG); the reported age is used"
                )
    return PatientInfo(**fields), warnings  # type: ignore[arg-type]


def _years_between(born: date, day: date) -> float:
    """Completed years of age on ``day``."""
    return float(day.year - born.year - ((day.month, day.day) < (born.month, born.day)))

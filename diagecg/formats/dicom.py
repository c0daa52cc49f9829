"""DICOM waveform ECG files (12-lead, General and Ambulatory ECG Waveform Storage) -> EcgRecord.

Spec: DICOM PS3.3 A.34 (ECG IODs) and C.10.9 (Waveform module),
https://dicom.nema.org/medical/dicom/current/output/chtml/part03/sect_C.10.9.html. A file holds one or
more multiplex groups (Waveform Sequence items), each a block of channels sampled together, stored
interleaved (C1S1, C2S1, ..., CnS1, C1S2, ...). A channel's value in its Channel Sensitivity Units is
``sample x Channel Sensitivity x Channel Sensitivity Correction Factor + Channel Baseline``
(C.10.9.1.4.2-3: the baseline is an offset in those units).

pydicom only parses the file; the samples are decoded here with numpy. pydicom's ``waveform_array``
applies the same formula but takes sensitivity 1 when it is missing, ignores the units and reshapes
without checking the data length, and each of those must be refused here. The group read is the rhythm
strip: the longest original group holding the leads, not a median beat.
"""

from __future__ import annotations

import math
import re
import warnings as pywarnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diagecg.config import QualityConfig
from diagecg.errors import HeaderError, SignalFileError
from diagecg.formats import import_optional, plausible_patient_value
from diagecg.leads import KNOWN_EXTRA_LEADS, LEAD_ALIASES, derive_limb_leads, normalise_lead_name
from diagecg.record import MAX_RECORD_SAMPLES, UNITS_TO_MV, record_from_array
from diagecg.types import EcgRecord, PatientInfo

ECG_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.9.1.1": "12-lead ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.2": "General ECG Waveform Storage",
    "1.2.840.10008.5.1.4.1.1.9.1.3": "Ambulatory ECG Waveform Storage",
}
# (Waveform Bits Allocated, Waveform Sample Interpretation) -> numpy type without byte order.
# MB/AB (mu-law/A-law audio) and the 32/64-bit codes are no ECG storage.
SAMPLE_TYPES: dict[tuple[int, str], str] = {
    (8, "SB"): "i1",
    (8, "UB"): "u1",
    (16, "SS"): "i2",
    (16, "US"): "u2",
}
# the leads a group needs: the other four limb leads can be derived from I and II
_REQUIRED_LEADS = frozenset({"I", "II", "V1", "V2", "V3", "V4", "V5", "V6"})
# PS3.16 CID 3001 codes the leads in SCP-ECG (5.6.3-9-N) or, since 2012, in MDC as "2:N" with the same N
_MDC_LEAD = re.compile(r"^2:(\d+)$")
_AGE = re.compile(r"^(\d{3})([DWMY])$")  # Age String (PS3.5 6.2): "045Y", "006M", "010W", "003D"
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


@dataclass(frozen=True)
class _Group:
    """What a multiplex group declares, read before any sample is decoded."""

    index: int
    item: Any  # the pydicom Dataset of the Waveform Sequence item
    label: str
    original: bool
    lead_names: tuple[str, ...]
    n_samples: int
    fs_hz: float | None

    def describe(self) -> str:
        duration = f", {self.n_samples / self.fs_hz:g} s" if self.fs_hz else ""
        return f"group {self.index + 1} {self.label!r} ({len(self.lead_names)} channels{duration})"


def read(path: Path, *, quality: QualityConfig | None = None) -> EcgRecord:
    """Read a DICOM ECG waveform file.

    Args:
        path: a DICOM file (``DICM`` at byte 128) already checked by ``diagecg.formats.check_file``.
        quality: thresholds of the signal checks; ``QualityConfig()`` when None.

    Returns:
        EcgRecord (float32 mV, (12, samples), canonical lead order) of the rhythm multiplex group, with
        ``patient`` from Patient's Age/Sex/Size/Weight and ``record_id`` the file stem.

    Raises:
        SignalFileError: unreadable DICOM, not an ECG waveform, unsupported sample coding, truncated data.
        HeaderError: a missing or invalid sampling rate, channel count, sensitivity, correction or units.
        LeadError: the chosen group lacks leads.
        SignalQualityError: see ``diagecg.quality.check_signal``.
    """
    source = str(path)
    pydicom = import_optional("pydicom", "dicom", "DICOM ECG files", source)
    with pywarnings.catch_warnings(record=True) as caught:
        # pydicom warns, and reads on, at invalid values and at a file that ends inside a sequence
        pywarnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path)
        except Exception as e:  # pydicom raises many types on a corrupt file
            raise SignalFileError(f"{source}: cannot read the DICOM file: {_one_line(e)}") from e
    read_warnings = [f"pydicom: {_one_line(w.message)}" for w in caught]
    sop_uid = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    sop_name = ECG_SOP_CLASSES.get(sop_uid) or _uid_name(pydicom, sop_uid)
    waveforms = ds.get("WaveformSequence")
    if not waveforms and sop_uid in ECG_SOP_CLASSES:
        raise SignalFileError(
            f"{source}: a DICOM {sop_name} without Waveform Sequence (a truncated file?)"
            + "".join(f"; {w}" for w in read_warnings)
        )
    if not waveforms:
        raise SignalFileError(
            f"{source}: a DICOM {sop_name} (modality {ds.get('Modality', '?')}) holds no "
            f"waveform (Waveform Sequence); diagecg reads ECG waveforms, not images"
        )
    if sop_uid not in ECG_SOP_CLASSES:
        raise SignalFileError(
            f"{source}: a DICOM {sop_name}, not an ECG waveform (expected one of "
            f"{', '.join(ECG_SOP_CLASSES.values())})"
        )
    groups = [_describe_group(i, item) for i, item in enumerate(waveforms)]
    group = max(groups, key=_rhythm_rank)
    warnings = read_warnings
    if len(groups) > 1:
        others = ", ".join(g.describe() for g in groups if g is not group)
        warnings.append(f"read multiplex {group.describe()}; ignored {others}")
    fs_hz = _sampling_rate(group, source)
    mv, channel_warnings = _decode_group(group, ds.original_encoding[1], source)
    mv, names, derive_warnings = derive_limb_leads(mv, group.lead_names)
    patient, patient_warnings = _patient(ds)
    return record_from_array(
        mv,
        fs_hz,
        names,
        units="mV",
        source=source,
        record_id=path.stem,
        patient=patient,
        warnings=[*warnings, *channel_warnings, *derive_warnings, *patient_warnings],
        quality=quality,
    )


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def _uid_name(pydicom: Any, uid: str) -> str:
    if not uid:
        return "object without SOP Class UID"
    name = pydicom.uid.UID(uid).name
    return str(name) if name != uid else f"object of SOP class {uid}"


# --- multiplex groups -----------------------------------------------------------------------------------


def _lead_name(channel: Any, k: int) -> str:
    """A channel's lead name: the code meaning when diagecg knows it, else the lead code (an unknown name
    is refused by ``canonical_lead_order``, which quotes it)."""
    sources = channel.get("ChannelSourceSequence")
    if not sources:
        label = str(channel.get("ChannelLabel", "") or "").strip()
        return label or f"<channel {k + 1}: no Channel Source Sequence or Channel Label>"
    code = sources[0]
    meaning = str(code.get("CodeMeaning", "") or "").strip()
    value = str(code.get("CodeValue", "") or "").strip()
    key = normalise_lead_name(meaning)
    if meaning and (key in LEAD_ALIASES or key in KNOWN_EXTRA_LEADS):
        return meaning
    mdc = _MDC_LEAD.match(value) if str(code.get("CodingSchemeDesignator", "")).upper() == "MDC" else None
    if mdc:
        return f"5.6.3-9-{mdc.group(1)}"
    return value or meaning or str(channel.get("ChannelLabel", "") or "")


def _describe_group(index: int, item: Any) -> _Group:
    """A group's declarations, unchecked: only the group that is read must be valid."""
    channels = item.get("ChannelDefinitionSequence") or []
    n_samples = item.get("NumberOfWaveformSamples")
    fs = item.get("SamplingFrequency")
    return _Group(
        index=index,
        item=item,
        label=str(item.get("MultiplexGroupLabel", "") or "unlabelled"),
        original=str(item.get("WaveformOriginality", "")).upper() == "ORIGINAL",
        lead_names=tuple(_lead_name(ch, k) for k, ch in enumerate(channels)),
        n_samples=n_samples if isinstance(n_samples, int) and n_samples > 0 else 0,
        fs_hz=_finite(fs) if fs is not None else None,
    )


def _rhythm_rank(g: _Group) -> tuple[bool, bool, bool, float]:
    """Sort key of the group to read: the leads present, original (a median beat is DERIVED), labelled
    RHYTHM, then the longest."""
    leads = {LEAD_ALIASES.get(normalise_lead_name(n)) for n in g.lead_names}
    duration = g.n_samples / g.fs_hz if g.fs_hz and g.fs_hz > 0 else 0.0
    return _REQUIRED_LEADS <= leads, g.original, "RHYTHM" in g.label.upper(), duration


def _sampling_rate(g: _Group, source: str) -> float:
    if g.item.get("SamplingFrequency") is None:
        raise HeaderError(
            f"{source}: multiplex {g.describe()} gives no Sampling Frequency; refusing to guess"
        )
    if g.fs_hz is None or not g.fs_hz > 0:
        raise HeaderError(
            f"{source}: multiplex {g.describe()} has Sampling Frequency "
            f"{g.item.get('SamplingFrequency')!r}; it must be a positive number of Hz"
        )
    return g.fs_hz


def _decode_group(g: _Group, little_endian: bool | None, source: str) -> tuple[np.ndarray, list[str]]:
    """The group's samples in mV, float64 (channels, samples), plus warnings; sizes checked first."""
    item = g.item
    n_ch = _positive_int(item, "NumberOfWaveformChannels", g.index, source)
    if n_ch != len(g.lead_names):
        raise HeaderError(
            f"{source}: multiplex {g.describe()} declares {n_ch} channels but defines "
            f"{len(g.lead_names)} (Channel Definition Sequence)"
        )
    n = _positive_int(item, "NumberOfWaveformSamples", g.index, source)
    if n * n_ch > MAX_RECORD_SAMPLES:
        raise SignalFileError(
            f"{source}: multiplex {g.describe()} declares {n} samples x {n_ch} channels, "
            f"more than diagecg reads ({MAX_RECORD_SAMPLES} values); crop the record first"
        )
    bits, interpretation = item.get("WaveformBitsAllocated"), item.get("WaveformSampleInterpretation")
    code = SAMPLE_TYPES.get((bits, interpretation))
    if code is None:
        raise SignalFileError(
            f"{source}: multiplex {g.describe()}: {bits}-bit samples of interpretation "
            f"{interpretation!r} are not ECG samples diagecg reads "
            f"(supported: {', '.join(f'{b}-bit {s}' for b, s in SAMPLE_TYPES)})"
        )
    data = item.get("WaveformData")
    if data is None:
        raise SignalFileError(f"{source}: multiplex {g.describe()} has no Waveform Data")
    frame_bytes = n_ch * bits // 8
    expected = n * frame_bytes
    if len(data) < expected:
        raise SignalFileError(
            f"{source}: Waveform Data of multiplex {g.describe()} is truncated: "
            f"{len(data)} bytes, but {n} samples x {n_ch} channels x {bits} bits need "
            f"{expected}"
        )
    warnings: list[str] = []
    if len(data) - expected >= frame_bytes:  # one pad byte (even length) is normal
        warnings.append(
            f"Waveform Data of multiplex group {g.index + 1} holds {len(data) - expected} bytes "
            f"beyond the {n} declared samples; they are ignored"
        )
    order = "<" if little_endian is not False else ">"
    # interleaved frames (samples, channels) -> (channels, samples)
    digital = np.frombuffer(data, dtype=order + code, count=n * n_ch).reshape(n, n_ch).T
    out = np.empty((n_ch, n), dtype=np.float64)
    no_correction: list[str] = []
    for k, channel in enumerate(item.ChannelDefinitionSequence):
        name = g.lead_names[k]
        sensitivity = _channel_number(channel, "ChannelSensitivity", name, source, positive=True)
        if channel.get("ChannelSensitivityCorrectionFactor") is None:
            no_correction.append(name)
            correction = 1.0
        else:
            correction = _channel_number(
                channel, "ChannelSensitivityCorrectionFactor", name, source, positive=True
            )
        baseline = (
            _channel_number(channel, "ChannelBaseline", name, source)
            if channel.get("ChannelBaseline") is not None
            else 0.0
        )
        to_mv = _units_to_mv(channel, name, source)
        out[k] = (digital[k] * (sensitivity * correction) + baseline) * to_mv
    if no_correction:
        # Type 1C next to a sensitivity: its absence means an uncorrected (nominal) sensitivity
        warnings.append(
            f"no Channel Sensitivity Correction Factor for {', '.join(no_correction)}; "
            f"the nominal sensitivity was used"
        )
    return out, warnings


def _units_to_mv(channel: Any, name: str, source: str) -> float:
    units = channel.get("ChannelSensitivityUnitsSequence")
    if not units:
        raise HeaderError(f"{source}: channel {name!r} has no Channel Sensitivity Units; refusing to guess")
    unit = str(units[0].get("CodeValue", "") or "").strip()
    factor = UNITS_TO_MV.get(unit.lower())
    if factor is None:
        raise HeaderError(
            f"{source}: channel {name!r} has sensitivity units {unit!r}, not a voltage (known: mV, uV, V, nV)"
        )
    return factor


def _channel_number(channel: Any, keyword: str, name: str, source: str, positive: bool = False) -> float:
    raw = channel.get(keyword)
    if raw is None:
        raise HeaderError(f"{source}: channel {name!r} has no {keyword}; refusing to guess")
    value = _finite(raw)
    if value is None or (positive and not value > 0):
        need = "a positive number" if positive else "a finite number"
        raise HeaderError(f"{source}: channel {name!r} has {keyword} {str(raw)!r}; it must be {need}")
    return value


def _positive_int(item: Any, keyword: str, group: int, source: str) -> int:
    raw = item.get(keyword)
    if raw is None:
        raise HeaderError(f"{source}: multiplex group {group + 1} gives no {keyword}")
    if not isinstance(raw, int) or raw <= 0:
        raise HeaderError(f"{source}: multiplex group {group + 1} has {keyword} {raw!r}; it must be > 0")
    return raw


def _finite(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# --- patient ------------------------------------------------------------------------------------------


def _patient(ds: Any) -> tuple[PatientInfo, list[str]]:
    """Patient's Age ("045Y"), Sex, Size (m) and Weight (kg); implausible values are warned about and
    left unset."""
    warnings: list[str] = []
    fields: dict[str, Any] = {}
    age = str(ds.get("PatientAge", "") or "").strip()
    if age:
        m = _AGE.match(age)
        if m:
            years = int(m.group(1)) * _AGE_UNIT_YEARS[m.group(2)]
            fields["age_years"] = plausible_patient_value("age_years", years, age, warnings)
        else:
            warnings.append(f"Patient's Age {age!r} is not a DICOM age string such as '045Y'; ignored")
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    if sex in ("M", "F"):
        fields["sex"] = "male" if sex == "M" else "female"
    elif sex:
        warnings.append(f"Patient's Sex {sex!r} is not M or F; ignored")
    for keyword, field, scale in (("PatientSize", "height_cm", 100.0), ("PatientWeight", "weight_kg", 1.0)):
        raw = ds.get(keyword)
        if raw is None or str(raw).strip() == "":
            continue
        value = _finite(raw)
        if value is None:
            warnings.append(f"{keyword} {str(raw)!r} is not a number; ignored")
            continue
        unit = "m" if keyword == "PatientSize" else "kg"
        fields[field] = plausible_patient_value(field, value * scale, f"{raw} {unit}", warnings)
    return PatientInfo(**fields), warnings

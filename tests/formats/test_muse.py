"""GE MUSE XML: real exports (checked against EGM's independent conversion), a round trip of a real PTB-XL
record through a MUSE file written here (equal to the WFDB read within quantisation), and damaged files."""

from __future__ import annotations

import base64
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pytest

from diagecg.constants import CANONICAL_LEADS
from diagecg.errors import HeaderError, LeadError, RecordError, SignalFileError
from diagecg.formats import detect_format, muse
from diagecg.io import read_record
from diagecg.leads import DERIVED_LIMB_LEADS, canonical_lead_order
from diagecg.types import EcgRecord

MUSE_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "formats" / "muse"
UV_PER_BIT = 4.88  # what GE carts write
STORED_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")  # what MUSE keeps of the 12
OneLine = Callable[[BaseException, Path], str]


# --- a small MUSE writer -----------------------------------------------------------------------------------


def _lead_fields(lead: str, digital: np.ndarray) -> dict[str, str | None]:
    """One LeadData, in the element order of a real MUSE 9 export. ``None`` values are left out."""
    raw = digital.astype("<i2").tobytes()
    text = base64.b64encode(raw).decode()
    return {
        "LeadByteCountTotal": str(len(raw)),
        "LeadTimeOffset": "0",
        "LeadSampleCountTotal": str(digital.size),
        "LeadAmplitudeUnitsPerBit": f"{UV_PER_BIT}",
        "LeadAmplitudeUnits": "MICROVOLTS",
        "LeadHighLimit": "32767",
        "LeadLowLimit": "-32768",
        "LeadID": lead,
        "LeadOffsetFirstSample": "0",
        "FirstSampleBaseline": "0",
        "LeadSampleSize": "2",
        "LeadOff": "FALSE",
        "BaselineSway": "FALSE",
        "LeadDataCRC32": str(zlib.crc32(raw)),
        # MUSE wraps the base64 text in lines; the reader must join them
        "WaveFormData": "\n".join(text[i : i + 64] for i in range(0, len(text), 64)),
    }


def _elements(fields: dict[str, str | None], indent: str) -> str:
    return "".join(f"{indent}<{k}>{escape(v)}</{k}>\n" for k, v in fields.items() if v is not None)


@dataclass
class MuseFile:
    """A MUSE RestingECG export of a record's leads (int16 at 4.88 uV per bit), editable before writing."""

    patient: dict[str, str | None]
    rhythm: dict[str, str | None]
    leads: list[dict[str, str | None]]
    median: list[dict[str, str | None]] = field(default_factory=list)

    @classmethod
    def of(cls, record: EcgRecord, leads: tuple[str, ...] = STORED_LEADS) -> MuseFile:
        digital = {
            lead: np.round(
                record.signal[record.lead_names.index(lead)].astype(np.float64) * 1000 / UV_PER_BIT
            )
            for lead in leads
        }
        return cls(
            patient={
                "PatientID": "0000002",
                "PatientAge": "19",
                "AgeUnits": "YEARS",
                "Gender": "MALE",
                "PatientLastName": "PTBXL",
                "PatientFirstName": "ECG2",
            },
            rhythm={
                "WaveformType": "Rhythm",
                "WaveformStartTime": "0",
                "NumberofLeads": str(len(leads)),
                "SampleType": "CONTINUOUS_SAMPLES",
                "SampleBase": f"{record.fs_hz:g}",
                "SampleExponent": "0",
                "HighPassFilter": "5",
                "LowPassFilter": "150",
                "ACFilter": "50",
            },
            leads=[_lead_fields(lead, d) for lead, d in digital.items()],
            # a Median beat that is not the recording: the reader must take the Rhythm waveform
            median=[_lead_fields(lead, d[:600] * 0 + 7) for lead, d in digital.items()],
        )

    def lead(self, lead_id: str) -> dict[str, str | None]:
        return next(f for f in self.leads if f["LeadID"] == lead_id)

    def write(self, path: Path) -> Path:
        median = {**self.rhythm, "WaveformType": "Median"}
        text = (
            '<?xml version="1.0" encoding="ISO-8859-1"?>\n<!DOCTYPE RestingECG SYSTEM "restecg.dtd">\n'
            "<RestingECG>\n   <MuseInfo>\n      <MuseVersion>9.0.10.18530</MuseVersion>\n   </MuseInfo>\n"
            f"   <PatientDemographics>\n{_elements(self.patient, '      ')}   </PatientDemographics>\n"
            "   <Diagnosis>\n      <DiagnosisStatement><StmtText>Sinus rhythm</StmtText>"
            "</DiagnosisStatement>\n   </Diagnosis>\n"
        )
        for fields, leads in ((median, self.median), (self.rhythm, self.leads)):
            text += f"   <Waveform>\n{_elements(fields, '      ')}"
            text += "".join(
                f"      <LeadData>\n{_elements(lead, '         ')}      </LeadData>\n" for lead in leads
            )
            text += "   </Waveform>\n"
        path.write_text(text + "</RestingECG>\n", encoding="iso-8859-1")
        return path


def derivation_residual(record: EcgRecord, lead: str) -> float:
    """max |lead - its Einthoven/Goldberger formula| in a record (mV): how far the source itself is from the
    formulas, 1-1.5 uV in PTB-XL, whose limb leads are each rounded to 1 uV."""
    x = record.signal.astype(np.float64)
    w_i, w_ii = DERIVED_LIMB_LEADS[lead]
    formula = w_i * x[CANONICAL_LEADS.index("I")] + w_ii * x[CANONICAL_LEADS.index("II")]
    return float(np.abs(x[CANONICAL_LEADS.index(lead)] - formula).max())


# --- real MUSE exports ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, age, sex", [("muse-sinus.xml", 43.0, "male"), ("braveheart_example1.xml", None, None)]
)
def test_real_muse_exports_are_detected_and_read(name: str, age: float | None, sex: str | None) -> None:
    path = MUSE_FIXTURES / name
    assert detect_format(path) == "muse"
    rec = read_record(path)
    assert (rec.fs_hz, rec.signal.shape, rec.lead_names) == (500.0, (12, 5000), CANONICAL_LEADS)
    assert rec.record_id == path.stem and rec.source == str(path)
    assert (rec.patient.age_years, rec.patient.sex) == (age, sex)
    assert rec.warnings == ["leads III, aVR, aVL, aVF derived from I and II (the file stores 8 leads)"]
    peak = np.abs(rec.signal).max(axis=1)
    assert (peak > 0.2).all() and (peak < 3.0).all()  # mV: 4.88 uV per bit applied, no factor 1000 off


def test_real_muse_export_matches_egm_independent_conversion() -> None:
    """EGM (R: xml2 + base64enc + readBin) converted muse-sinus.xml to WFDB, storing microvolts rounded to
    integers, limb leads derived by its own code: every lead agrees to within that rounding."""
    rec = read_record(MUSE_FIXTURES / "muse-sinus.xml")
    egm = np.fromfile(MUSE_FIXTURES / "muse-sinus.dat", dtype="<i2").reshape(5000, 12).T
    egm_leads = ["I", "II", "III", "AVF", "AVL", "AVR", "V1", "V2", "V3", "V4", "V5", "V6"]
    order, _ = canonical_lead_order(egm_leads)
    diff_uv = np.abs(rec.signal.astype(np.float64) * 1000 - egm[order])
    assert diff_uv.max() <= 0.5 + 1e-3, diff_uv.max(axis=1)


def test_derived_limb_leads_follow_einthoven_and_goldberger() -> None:
    rec = read_record(MUSE_FIXTURES / "braveheart_example1.xml")
    for lead in DERIVED_LIMB_LEADS:
        assert derivation_residual(rec, lead) < 1e-6, lead


def test_a_crc_mismatch_in_a_real_export_is_refused(tmp_path: Path, one_line: OneLine) -> None:
    text = (MUSE_FIXTURES / "muse-sinus.xml").read_text(encoding="iso-8859-1")
    rhythm = text.index("<WaveformType>Rhythm")
    assert text.count("<LeadDataCRC32>3735479089</LeadDataCRC32>", rhythm) == 1  # lead II of the Rhythm
    path = tmp_path / "crc.xml"
    path.write_text(text[:rhythm] + text[rhythm:].replace("3735479089", "3735479088"), encoding="iso-8859-1")
    with pytest.raises(SignalFileError, match=r"Rhythm lead II: CRC-32 .* declares 3735479088") as e:
        read_record(path)
    one_line(e.value, path)


# --- a real PTB-XL record through MUSE XML ---------------------------------------------------------------


def test_muse_round_trip_equals_the_wfdb_read(tmp_path: Path, wfdb_source: EcgRecord) -> None:
    path = MuseFile.of(wfdb_source).write(tmp_path / "ptbxl_00002.xml")
    assert detect_format(path) == "muse"
    rec = read_record(path)
    assert (rec.fs_hz, rec.signal.shape, rec.lead_names) == (500.0, (12, 5000), CANONICAL_LEADS)
    assert (
        (rec.patient.age_years, rec.patient.sex)
        == (19.0, "male")
        == (wfdb_source.patient.age_years, wfdb_source.patient.sex)
    )
    assert rec.record_id == "ptbxl_00002"
    half_step = UV_PER_BIT / 2 / 1000  # mV: rounding to the 4.88 uV grid
    diff = np.abs(rec.signal.astype(np.float64) - wfdb_source.signal.astype(np.float64)).max(axis=1)
    for k, lead in enumerate(CANONICAL_LEADS):
        if lead in DERIVED_LIMB_LEADS:
            # computed from the rounded I and II; PTB-XL's own limb leads are 1-1.5 uV off the formulas
            w_i, w_ii = DERIVED_LIMB_LEADS[lead]
            bound = (abs(w_i) + abs(w_ii)) * half_step + derivation_residual(wfdb_source, lead)
        else:
            bound = half_step
        assert diff[k] <= bound + 1e-6, (lead, diff[k], bound)


def test_twelve_stored_leads_are_used_as_stored(tmp_path: Path, wfdb_source: EcgRecord) -> None:
    path = MuseFile.of(wfdb_source, leads=CANONICAL_LEADS).write(tmp_path / "twelve.xml")
    rec = read_record(path)
    assert rec.warnings == []
    diff = np.abs(rec.signal.astype(np.float64) - wfdb_source.signal.astype(np.float64)).max()
    assert diff <= UV_PER_BIT / 2 / 1000 + 1e-6


def test_a_crc_written_as_signed_int32_is_accepted(tmp_path: Path, wfdb_source: EcgRecord) -> None:
    f = MuseFile.of(wfdb_source)
    for lead in f.leads:
        crc = int(lead["LeadDataCRC32"] or 0)
        lead["LeadDataCRC32"] = str(crc - 2**32 if crc >= 2**31 else crc)
    assert any((lead["LeadDataCRC32"] or "").startswith("-") for lead in f.leads)
    read_record(f.write(tmp_path / "signed_crc.xml"))


def test_a_nonzero_first_sample_baseline_is_reported(tmp_path: Path, wfdb_source: EcgRecord) -> None:
    f = MuseFile.of(wfdb_source)
    f.lead("V4")["FirstSampleBaseline"] = "12"
    rec = read_record(f.write(tmp_path / "baseline.xml"))
    assert "Rhythm lead V4: FirstSampleBaseline '12' ignored (samples read as stored)" in rec.warnings


def test_rate_is_sample_base_times_ten_to_the_exponent(tmp_path: Path, wfdb_source: EcgRecord) -> None:
    f = MuseFile.of(wfdb_source)
    f.rhythm.update(SampleBase="50", SampleExponent="1")
    assert read_record(f.write(tmp_path / "exp.xml")).fs_hz == 500.0
    f.rhythm.update(SampleBase="500", SampleExponent=None)
    rec = read_record(f.write(tmp_path / "no_exp.xml"))
    assert rec.fs_hz == 500.0 and any("no SampleExponent" in w for w in rec.warnings)


@pytest.mark.parametrize(
    "fields, expected, warned",
    [
        ({"HeightCM": "180", "WeightKG": "93"}, (19.0, "male", 180.0, 93.0), None),
        ({"HeightIN": "70", "WeightLBS": "154"}, (19.0, "male", 177.8, 154 * 0.45359237), None),
        ({"PatientAge": "18", "AgeUnits": "MONTHS", "Gender": "FEMALE"}, (1.5, "female", None, None), None),
        ({"PatientAge": "300", "Gender": "UNKNOWN"}, (None, None, None, None), "outside [0, 125]"),
        ({"AgeUnits": None}, (None, "male", None, None), "AgeUnits 'missing'"),
        ({"Gender": "OTHER", "WeightKG": "abc"}, (19.0, None, None, None), "is not a number"),
    ],
)
def test_patient_demographics(
    tmp_path: Path,
    wfdb_source: EcgRecord,
    fields: dict[str, str | None],
    expected: tuple[object, ...],
    warned: str | None,
) -> None:
    f = MuseFile.of(wfdb_source)
    f.patient.update(fields)
    p = read_record(f.write(tmp_path / "demo.xml")).patient
    assert (p.age_years, p.sex, p.height_cm, p.weight_kg) == pytest.approx(expected)
    if warned:
        assert any(warned in w for w in read_record(tmp_path / "demo.xml").warnings)


# --- damaged files ---------------------------------------------------------------------------------------


def _cut_base64(f: MuseFile) -> None:
    data = f.lead("V2")["WaveFormData"]
    assert data is not None
    f.lead("V2")["WaveFormData"] = data[:-9]


def _bad_base64(f: MuseFile) -> None:
    data = f.lead("V2")["WaveFormData"]
    assert data is not None
    f.lead("V2")["WaveFormData"] = "*" + data[1:]


def _shorten_lead_i(f: MuseFile) -> None:
    """Lead I consistently 4 000 samples long (count, bytes, data and CRC agree), the others 5 000."""
    data = f.lead("I")["WaveFormData"]
    assert data is not None
    digital = np.frombuffer(base64.b64decode("".join(data.split())), dtype="<i2")[:4000]
    f.leads[f.leads.index(f.lead("I"))] = _lead_fields("I", digital)


def _set(lead: str | None = None, **fields: str | None) -> Callable[[MuseFile], None]:
    def edit(f: MuseFile) -> None:
        (f.rhythm if lead is None else f.lead(lead)).update(fields)

    return edit


@pytest.mark.parametrize(
    "edit, error, message",
    [
        (
            _cut_base64,
            SignalFileError,
            r"lead V2: WaveFormData holds 13327 base64 characters; 5000 samples need "
            r"13336 \(truncated",
        ),
        (_bad_base64, SignalFileError, "lead V2: WaveFormData is not valid base64"),
        (
            _set("V5", LeadDataCRC32="12345"),
            SignalFileError,
            "lead V5: CRC-32 of WaveFormData .*declares 12345",
        ),
        (_set("I", LeadByteCountTotal="9998"), SignalFileError, "lead I: LeadByteCountTotal 9998 disagrees"),
        (
            _set("I", LeadSampleCountTotal="4000"),
            SignalFileError,
            "lead I: LeadByteCountTotal 10000 disagrees with 4000 samples",
        ),
        (_shorten_lead_i, SignalFileError, "Rhythm leads differ in length: I 4000, II 5000"),
        (_set("V1", LeadSampleSize="4"), SignalFileError, "lead V1: LeadSampleSize 4 bytes is not supported"),
        (_set(SampleBase=None), HeaderError, "gives no SampleBase"),
        (_set(SampleBase="0"), HeaderError, "SampleBase 0 x 10\\^0 Hz is not a positive number"),
        (_set(SampleBase="NaN"), HeaderError, "SampleBase is 'NaN', not a finite number"),
        (_set(SampleBase="5", SampleExponent="0"), HeaderError, "5 Hz is not an ECG's"),
        (
            _set("II", LeadAmplitudeUnitsPerBit=None),
            HeaderError,
            "lead II: LeadAmplitudeUnitsPerBit is missing",
        ),
        (
            _set("II", LeadAmplitudeUnitsPerBit="0"),
            HeaderError,
            "lead II: LeadAmplitudeUnitsPerBit is 0, not a positive scale",
        ),
        (
            _set("V6", LeadAmplitudeUnits="MILLIMETERS"),
            HeaderError,
            "lead V6: LeadAmplitudeUnits 'MILLIMETERS' is not a voltage",
        ),
        (
            _set("V6", LeadAmplitudeUnits=None),
            HeaderError,
            "lead V6: LeadAmplitudeUnits None is not a voltage",
        ),
        (_set(WaveformType="Median"), HeaderError, "no Rhythm waveform"),
    ],
)
def test_damaged_files_are_refused_in_one_line(
    tmp_path: Path,
    wfdb_source: EcgRecord,
    one_line: OneLine,
    edit: Callable[[MuseFile], None],
    error: type[RecordError],
    message: str,
) -> None:
    f = MuseFile.of(wfdb_source)
    edit(f)
    path = f.write(tmp_path / "bad.xml")
    with pytest.raises(error, match=message) as e:
        read_record(path)
    one_line(e.value, path)


def test_a_missing_lead_is_named(tmp_path: Path, wfdb_source: EcgRecord, one_line: OneLine) -> None:
    f = MuseFile.of(wfdb_source)
    f.leads.remove(f.lead("V3"))
    path = f.write(tmp_path / "seven.xml")
    with pytest.raises(LeadError, match="missing lead V3") as e:
        read_record(path)
    one_line(e.value, path)


def test_broken_xml_and_other_roots_are_refused(tmp_path: Path, one_line: OneLine) -> None:
    cut = tmp_path / "cut.xml"
    cut.write_bytes((MUSE_FIXTURES / "muse-sinus.xml").read_bytes()[:50_000])
    with pytest.raises(SignalFileError, match="not well-formed XML") as e:
        muse.read(cut)
    one_line(e.value, cut)
    other = tmp_path / "other.xml"
    other.write_text("<AnnotatedECG/>")
    with pytest.raises(SignalFileError, match="not a MUSE <RestingECG>"):
        muse.read(other)


def test_a_copied_real_export_reads_the_same_from_any_name(tmp_path: Path) -> None:
    src = MUSE_FIXTURES / "braveheart_example1.xml"
    copy = tmp_path / "IMG0001"  # exports leave carts under arbitrary names; content decides
    shutil.copy(src, copy)
    np.testing.assert_array_equal(read_record(copy).signal, read_record(src).signal)

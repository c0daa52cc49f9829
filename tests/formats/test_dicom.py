"""The DICOM ECG reader: pydicom's real 12-lead ECG (checked against pydicom's own decoder), a real PTB-XL
record written as DICOM (checked against the WFDB read), and corrupted copies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from diagecg.constants import CANONICAL_LEADS
from diagecg.errors import HeaderError, LeadError, SignalFileError
from diagecg.formats import detect_format
from diagecg.io import read_record
from diagecg.leads import canonical_lead_order
from diagecg.types import EcgRecord

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "formats" / "dicom" / "waveform_ecg.dcm"
TWELVE_LEAD_ECG = UID("1.2.840.10008.5.1.4.1.1.9.1.1")
# canonical lead -> SCP-ECG lead number (PS3.16 CID 3001: code 5.6.3-9-N, or MDC 2:N)
SCPECG_NUMBER = {
    "I": 1,
    "II": 2,
    "III": 61,
    "aVR": 62,
    "aVL": 63,
    "aVF": 64,
    "V1": 3,
    "V2": 4,
    "V3": 5,
    "V4": 6,
    "V5": 7,
    "V6": 8,
}
EIGHT_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


# --- writing DICOM ECGs -----------------------------------------------------------------------------------


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def multiplex_group(
    signal_mv: np.ndarray,
    fs_hz: float,
    leads: tuple[str, ...],
    *,
    label: str = "RHYTHM",
    sensitivity_uv: float = 1.0,
    correction: float = 1.0,
    baseline_uv: float = 0.0,
    mdc_codes: bool = False,
) -> Dataset:
    """One 16-bit multiplex group holding ``signal_mv`` (mV, (leads, samples)) in canonical lead order."""
    rows = [CANONICAL_LEADS.index(lead) for lead in leads]
    # physical = digital x sensitivity x correction + baseline, in uV
    digital = np.round((signal_mv[rows] * 1000 - baseline_uv) / (sensitivity_uv * correction))
    assert np.abs(digital).max() < 32768
    group = Dataset()
    group.MultiplexGroupLabel = label
    group.WaveformOriginality = "ORIGINAL" if label == "RHYTHM" else "DERIVED"
    group.NumberOfWaveformChannels = len(leads)
    group.NumberOfWaveformSamples = signal_mv.shape[1]
    group.SamplingFrequency = f"{fs_hz:g}"
    channels = []
    for lead in leads:
        n = SCPECG_NUMBER[lead]
        ch = Dataset()
        source = _code(f"2:{n}", "MDC", "") if mdc_codes else _code(f"5.6.3-9-{n}", "SCPECG", f"Lead {lead}")
        ch.ChannelSourceSequence = Sequence([source])
        ch.ChannelSensitivity = f"{sensitivity_uv:g}"
        ch.ChannelSensitivityUnitsSequence = Sequence([_code("uV", "UCUM", "microvolt")])
        ch.ChannelSensitivityCorrectionFactor = f"{correction:g}"
        ch.ChannelBaseline = f"{baseline_uv:g}"
        ch.WaveformBitsStored = 16
        channels.append(ch)
    group.ChannelDefinitionSequence = Sequence(channels)
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    group.WaveformData = digital.T.astype("<i2").tobytes()  # interleaved: (samples, channels)
    return group


def write_dicom_ecg(path: Path, groups: list[Dataset], *, age: str = "019Y", sex: str = "M") -> Path:
    """A 12-lead ECG Waveform Storage file holding ``groups``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = TWELVE_LEAD_ECG
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = TWELVE_LEAD_ECG, meta.MediaStorageSOPInstanceUID, "ECG"
    ds.PatientAge, ds.PatientSex = age, sex
    ds.WaveformSequence = Sequence(groups)
    ds.save_as(path, enforce_file_format=True)
    return path


def edited_fixture(tmp_path: Path, edit: Callable[[Dataset], None], name: str = "edited.dcm") -> Path:
    """A copy of the real fixture, changed by ``edit``."""
    ds = pydicom.dcmread(FIXTURE)
    edit(ds)
    path = tmp_path / name
    ds.save_as(path)
    return path


def rhythm(ds: Dataset) -> Dataset:
    return ds.WaveformSequence[0]


def first_channel(ds: Dataset) -> Dataset:
    return rhythm(ds).ChannelDefinitionSequence[0]


# --- the real fixture -----------------------------------------------------------------------------------


def test_pydicom_ecg_is_detected_and_read_like_pydicom_decodes_it() -> None:
    assert detect_format(FIXTURE) == "dicom"
    rec = read_record(FIXTURE)
    assert (rec.fs_hz, rec.signal.shape, rec.lead_names) == (1000.0, (12, 10000), CANONICAL_LEADS)
    assert rec.record_id == "waveform_ecg" and rec.source == str(FIXTURE)
    assert (rec.patient.age_years, rec.patient.sex) == (42.0, "female")
    assert rec.warnings == [
        "read multiplex group 1 'RHYTHM' (12 channels, 10 s); ignored group 2 "
        "'MEDIAN BEAT' (12 channels, 1.2 s)"
    ]
    # second implementation: pydicom's decoder (the fixture has sensitivity 1.25 uV, correction 1, baseline 0)
    ds = pydicom.dcmread(FIXTURE)
    names = [ch.ChannelSourceSequence[0].CodeMeaning for ch in rhythm(ds).ChannelDefinitionSequence]
    order, _ = canonical_lead_order(names)
    reference_mv = ds.waveform_array(0).T[order] / 1000  # (12, samples), uV -> mV
    np.testing.assert_allclose(rec.signal, reference_mv, rtol=0, atol=1e-6)


# --- a real PTB-XL record written as DICOM ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sensitivity_uv", "correction", "baseline_uv"), [(1.0, 1.0, 0.0), (2.5, 1.0, 0.0), (5.0, 0.5, -40.0)]
)
def test_ptbxl_record_as_dicom_equals_the_wfdb_read(
    tmp_path: Path, wfdb_source: EcgRecord, sensitivity_uv: float, correction: float, baseline_uv: float
) -> None:
    src = wfdb_source
    group = multiplex_group(
        src.signal,
        src.fs_hz,
        CANONICAL_LEADS,
        sensitivity_uv=sensitivity_uv,
        correction=correction,
        baseline_uv=baseline_uv,
    )
    path = write_dicom_ecg(tmp_path / "00002.dcm", [group])
    rec = read_record(path)
    assert (rec.fs_hz, rec.lead_names, rec.signal.shape) == (500.0, CANONICAL_LEADS, src.signal.shape)
    assert (src.patient.age_years, src.patient.sex) == (19.0, "male")
    assert (rec.patient.age_years, rec.patient.sex) == (src.patient.age_years, src.patient.sex)
    assert rec.record_id == "00002" and rec.warnings == []
    half_step_mv = sensitivity_uv * correction / 2 / 1000  # rounding to the DICOM's resolution
    np.testing.assert_allclose(rec.signal, src.signal, rtol=0, atol=half_step_mv + 1e-6)


def test_eight_lead_group_gets_its_limb_leads_derived(tmp_path: Path, wfdb_source: EcgRecord) -> None:
    src = wfdb_source
    path = write_dicom_ecg(tmp_path / "eight.dcm", [multiplex_group(src.signal, src.fs_hz, EIGHT_LEADS)])
    rec = read_record(path)
    assert rec.warnings == ["leads III, aVR, aVL, aVF derived from I and II (the file stores 8 leads)"]
    lead_i, lead_ii = src.signal[0].astype(np.float64), src.signal[1].astype(np.float64)
    expected = {
        "III": lead_ii - lead_i,
        "aVR": -(lead_i + lead_ii) / 2,
        "aVL": lead_i - lead_ii / 2,
        "aVF": lead_ii - lead_i / 2,
    }
    for lead, x in expected.items():
        np.testing.assert_allclose(rec.signal[CANONICAL_LEADS.index(lead)], x, rtol=0, atol=1e-6)
    for lead in EIGHT_LEADS:
        k = CANONICAL_LEADS.index(lead)
        np.testing.assert_allclose(rec.signal[k], src.signal[k], rtol=0, atol=1e-6)


def test_rhythm_group_is_read_whatever_its_position(tmp_path: Path, wfdb_source: EcgRecord) -> None:
    src = wfdb_source
    beat = multiplex_group(src.signal[:, :600], src.fs_hz, CANONICAL_LEADS, label="MEDIAN BEAT")
    strip = multiplex_group(src.signal, src.fs_hz, CANONICAL_LEADS)
    rec = read_record(write_dicom_ecg(tmp_path / "two.dcm", [beat, strip]))
    assert rec.signal.shape == (12, 5000)
    assert rec.warnings == [
        "read multiplex group 2 'RHYTHM' (12 channels, 10 s); ignored group 1 "
        "'MEDIAN BEAT' (12 channels, 1.2 s)"
    ]


def test_mdc_lead_codes_without_meaning_are_mapped(tmp_path: Path, wfdb_source: EcgRecord) -> None:
    src = wfdb_source
    group = multiplex_group(src.signal, src.fs_hz, CANONICAL_LEADS[::-1], mdc_codes=True)
    rec = read_record(write_dicom_ecg(tmp_path / "mdc.dcm", [group]))
    np.testing.assert_allclose(rec.signal, src.signal, rtol=0, atol=1e-6)


def test_patient_fields_and_implausible_values(tmp_path: Path) -> None:
    def edit(ds: Dataset) -> None:
        ds.PatientSize, ds.PatientWeight = "1.72", "81.5"

    rec = read_record(edited_fixture(tmp_path, edit, "ok.dcm"))
    assert (rec.patient.height_cm, rec.patient.weight_kg) == (pytest.approx(172.0), 81.5)

    def implausible(ds: Dataset) -> None:
        ds.PatientAge, ds.PatientSex, ds.PatientSize, ds.PatientWeight = "130Y", "O", "172", "81.5"

    rec = read_record(edited_fixture(tmp_path, implausible, "bad.dcm"))
    assert rec.patient.age_years is None and rec.patient.sex is None and rec.patient.height_cm is None
    assert rec.patient.weight_kg == 81.5
    assert "patient age '130Y' is outside [0, 125]; ignored" in rec.warnings
    assert "Patient's Sex 'O' is not M or F; ignored" in rec.warnings
    assert "patient height '172 m' is outside [30, 260]; ignored" in rec.warnings


# --- bad files ------------------------------------------------------------------------------------------


def _truncate(ds: Dataset) -> None:
    rhythm(ds).WaveformData = rhythm(ds).WaveformData[:-1000]


def _set_channel(keyword: str, value: object) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        if value is None:
            delattr(first_channel(ds), keyword)
        else:
            setattr(first_channel(ds), keyword, value)

    return edit


def _set_group(keyword: str, value: object) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        for group in ds.WaveformSequence:
            if value is None:
                delattr(group, keyword)
            else:
                setattr(group, keyword, value)

    return edit


def _units(code: str) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        first_channel(ds).ChannelSensitivityUnitsSequence[0].CodeValue = code

    return edit


BAD_EDITS: dict[str, tuple[Callable[[Dataset], None], type[Exception], str]] = {
    "truncated data": (
        _truncate,
        SignalFileError,
        "is truncated: 239000 bytes, but 10000 samples x 12 channels x 16 bits need 240000",
    ),
    "no rate": (_set_group("SamplingFrequency", None), HeaderError, "gives no Sampling Frequency"),
    "zero rate": (_set_group("SamplingFrequency", "0"), HeaderError, "has Sampling Frequency '0'"),
    "no sensitivity": (
        _set_channel("ChannelSensitivity", None),
        HeaderError,
        "channel 'Lead I (Einthoven)' has no ChannelSensitivity; refusing to guess",
    ),
    "zero sensitivity": (
        _set_channel("ChannelSensitivity", "0"),
        HeaderError,
        "has ChannelSensitivity '0'; it must be a positive number",
    ),
    "zero correction": (
        _set_channel("ChannelSensitivityCorrectionFactor", "0"),
        HeaderError,
        "ChannelSensitivityCorrectionFactor '0'",
    ),
    "no units": (
        _set_channel("ChannelSensitivityUnitsSequence", None),
        HeaderError,
        "has no Channel Sensitivity Units",
    ),
    "unknown units": (_units("mm[Hg]"), HeaderError, "sensitivity units 'mm[Hg]', not a voltage"),
    "channel count": (
        _set_group("NumberOfWaveformChannels", 11),
        HeaderError,
        "declares 11 channels but defines 12",
    ),
    "no samples": (
        _set_group("NumberOfWaveformSamples", 0),
        HeaderError,
        "NumberOfWaveformSamples 0; it must be > 0",
    ),
    "mu-law samples": (
        _set_group("WaveformSampleInterpretation", "MB"),
        SignalFileError,
        "16-bit samples of interpretation 'MB' are not ECG samples",
    ),
}


@pytest.mark.parametrize("case", list(BAD_EDITS))
def test_corrupted_fixture_is_refused_in_one_line(
    tmp_path: Path, one_line: Callable[..., str], case: str
) -> None:
    edit, error, expected = BAD_EDITS[case]
    path = edited_fixture(tmp_path, edit)
    with pytest.raises(error) as excinfo:
        read_record(path)
    assert expected in one_line(excinfo.value, path)


def test_a_missing_lead_is_named(
    tmp_path: Path, wfdb_source: EcgRecord, one_line: Callable[..., str]
) -> None:
    src = wfdb_source
    leads = tuple(lead for lead in CANONICAL_LEADS if lead != "V3")
    path = write_dicom_ecg(tmp_path / "no_v3.dcm", [multiplex_group(src.signal, src.fs_hz, leads)])
    with pytest.raises(LeadError) as excinfo:
        read_record(path)
    assert "missing lead V3" in one_line(excinfo.value, path)


def test_declared_size_is_checked_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_line: Callable[..., str]
) -> None:
    monkeypatch.setattr("diagecg.formats.dicom.MAX_RECORD_SAMPLES", 100_000)
    with pytest.raises(SignalFileError) as excinfo:
        read_record(FIXTURE)
    assert "declares 10000 samples x 12 channels, more than diagecg reads" in one_line(excinfo.value, FIXTURE)


def test_a_dicom_image_is_refused(one_line: Callable[..., str]) -> None:
    image = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
    with pytest.raises(SignalFileError) as excinfo:
        read_record(image)
    message = one_line(excinfo.value, image)
    assert "a DICOM CT Image Storage (modality CT) holds no waveform" in message


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (1000, "a DICOM 12-lead ECG Waveform Storage without Waveform Sequence (a truncated file?)"),
        (3000, "cannot read the DICOM file: No tag to read at file position BB8"),
    ],
)
def test_a_truncated_dicom_is_refused(
    tmp_path: Path, one_line: Callable[..., str], size: int, expected: str
) -> None:
    path = tmp_path / "truncated.dcm"
    path.write_bytes(FIXTURE.read_bytes()[:size])  # ends in the patient module / in the Waveform Sequence
    with pytest.raises(SignalFileError) as excinfo:
        read_record(path)
    assert expected in one_line(excinfo.value, path)

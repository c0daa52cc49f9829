"""EDF/EDF+: a real PTB-XL record written as EDF+ with edfio reads back equal to the WFDB read; the
calibration is checked against the EDF formula on the file's raw bytes; a real sleep recording (no ECG)
and damaged files are refused in one line."""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diagecg.constants import CANONICAL_LEADS
from diagecg.errors import HeaderError, LeadError, RecordError, SignalFileError
from diagecg.formats import detect_format, edf
from diagecg.io import read_record
from diagecg.types import EcgRecord

edfio = pytest.importorskip("edfio")

EDF_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "formats" / "edf"
OneLine = Callable[[BaseException, Path], str]
DIGITAL = (-32000, 32000)  # with physical (-32000, 32000) uV or (-32, 32) mV: 1 uV per step, exactly
# byte offset of a signal-header field of signal 0 in a file with ns signals: 256 + ns * OFFSET (+ i * width)
FIELD_OFFSETS = {
    "label": (0, 16),
    "dimension": (96, 8),
    "physical_min": (104, 8),
    "physical_max": (112, 8),
    "digital_min": (120, 8),
    "digital_max": (128, 8),
    "samples": (216, 8),
}


def write_edf(
    path: Path,
    record: EcgRecord,
    *,
    label: str = "ECG {lead}",
    units: str = "uV",
    leads: tuple[str, ...] = CANONICAL_LEADS,
    extra: tuple[Any, ...] = (),
    annotations: bool = True,
    patient: Any = None,
    startdate: datetime.date | None = None,
    rates: dict[str, int] | None = None,
) -> Path:
    """``record`` as EDF (EDF+C when ``annotations``): digital value = the PTB-XL sample in uV (PTB-XL's
    resolution is 1 uV), so a lossless calibration exists; in mV units the physical range is scaled by
    1/1000. ``rates`` decimates some leads (an inconsistent file)."""
    per_unit = {"uV": 1.0, "mV": 1e-3}[units]
    signals = []
    for lead in leads:
        uv = np.round(record.signal[record.lead_names.index(lead)].astype(np.float64) * 1000).astype(np.int16)
        fs = rates.get(lead, record.fs_hz) if rates else record.fs_hz
        step = int(record.fs_hz // fs)
        signals.append(
            edfio.EdfSignal.from_digital(
                np.ascontiguousarray(uv[::step]),
                fs,
                label=label.format(lead=lead),
                physical_dimension=units,
                physical_range=(DIGITAL[0] * per_unit, DIGITAL[1] * per_unit),
                digital_range=DIGITAL,
            )
        )
    signals += list(extra)
    recording = edfio.Recording(startdate=startdate or datetime.date(2020, 6, 1))
    edf_file = edfio.Edf(
        signals,
        patient=patient or edfio.Patient(),
        recording=recording,
        annotations=[edfio.EdfAnnotation(0.0, None, "start")] if annotations else None,
    )
    edf_file.write(path)
    return path


def patch_field(path: Path, field: str, signal: int, text: str) -> None:
    """Overwrite one fixed-width signal-header field of ``path`` (space padded ASCII, as EDF stores it)."""
    data = bytearray(path.read_bytes())
    n_signals = int(data[252:256])
    offset, width = FIELD_OFFSETS[field]
    start = 256 + n_signals * offset + signal * width
    data[start : start + width] = text.ljust(width).encode("ascii")
    path.write_bytes(bytes(data))


def patch_header(path: Path, start: int, width: int, text: str) -> None:
    data = bytearray(path.read_bytes())
    data[start : start + width] = text.ljust(width).encode("ascii")
    path.write_bytes(bytes(data))


def resp_channel(seconds: float) -> Any:
    t = np.arange(int(seconds * 25)) / 25
    return edfio.EdfSignal(np.sin(2 * np.pi * 0.25 * t), 25, label="Resp chest", physical_dimension="a.u.")


# --- real files ------------------------------------------------------------------------------------------


def test_real_sleep_recording_is_detected_and_refused_for_lack_of_ecg(one_line: OneLine) -> None:
    path = EDF_FIXTURES / "short_psg.edf"
    assert detect_format(path) == "edf"
    with pytest.raises(
        LeadError,
        match=r"no ECG lead among the EDF signals \['EEG Fpz-Cz', 'EEG Pz-Oz', "
        r"'EOG horizontal',.*'Event marker'\]",
    ) as e:
        read_record(path)
    one_line(e.value, path)


# --- a real PTB-XL record through EDF+ -------------------------------------------------------------------


@pytest.mark.parametrize("label, units", [("ECG {lead}", "uV"), ("EKG {lead}", "mV"), ("{lead}", "uV")])
def test_edf_round_trip_equals_the_wfdb_read(
    tmp_path: Path, wfdb_source: EcgRecord, label: str, units: str
) -> None:
    path = write_edf(
        tmp_path / "ptbxl_00002.edf",
        wfdb_source,
        label=label,
        units=units,
        extra=(resp_channel(wfdb_source.duration_s),),
        patient=edfio.Patient(code="00002", sex="M", birthdate=datetime.date(2001, 3, 15)),
    )
    assert detect_format(path) == "edf"
    rec = read_record(path)
    assert (rec.fs_hz, rec.signal.shape, rec.lead_names) == (500.0, (12, 5000), CANONICAL_LEADS)
    assert rec.record_id == "ptbxl_00002"
    assert (rec.patient.sex, rec.patient.age_years) == ("male", 19.0)  # 2001-03-15 to 2020-06-01
    assert rec.warnings == ["dropped 1 non-ECG channel(s): Resp chest"]  # the annotations go unmentioned
    np.testing.assert_allclose(rec.signal, wfdb_source.signal, rtol=0, atol=1e-6)


def test_edfio_physical_values_are_the_edf_formula_on_the_raw_bytes(
    tmp_path: Path, wfdb_source: EcgRecord
) -> None:
    """Independent of edfio: physical = pmin + (digital - dmin) * (pmax - pmin) / (dmax - dmin), with an
    asymmetric range (a non-zero offset) and an inverted one (pmin > pmax: the EDF way to flip polarity)."""
    path = write_edf(tmp_path / "cal.edf", wfdb_source, annotations=False)
    calibrations = {6: (-40000.0, 80000.0), 7: (32000.0, -32000.0)}  # V1, V2: no limb-lead relation to break
    for k, (pmin, pmax) in calibrations.items():
        patch_field(path, "physical_min", k, f"{pmin:g}")
        patch_field(path, "physical_max", k, f"{pmax:g}")
    raw = path.read_bytes()
    per_record = int(raw[256 + 12 * 216 : 256 + 12 * 216 + 8])  # samples per data record of signal 1
    digital = np.frombuffer(raw[256 * 13 :], dtype="<i2").reshape(-1, 12, per_record)  # (records, signals, .)
    rec = read_record(path)
    for k, (pmin, pmax) in calibrations.items():
        d = digital[:, k, :].reshape(-1).astype(np.float64)
        uv = pmin + (d - DIGITAL[0]) * (pmax - pmin) / (DIGITAL[1] - DIGITAL[0])
        np.testing.assert_allclose(rec.signal[k], uv / 1000, rtol=0, atol=1e-6)


def test_edf_patient_fields(tmp_path: Path, wfdb_source: EcgRecord) -> None:
    anonymous = read_record(write_edf(tmp_path / "x.edf", wfdb_source))  # edfio writes "X X X X"
    assert (anonymous.patient.sex, anonymous.patient.age_years) == (None, None)
    old = write_edf(
        tmp_path / "old.edf", wfdb_source, patient=edfio.Patient(sex="F", birthdate=datetime.date(1880, 1, 1))
    )
    rec = read_record(old)
    assert (rec.patient.sex, rec.patient.age_years) == ("female", None)
    assert any("patient age" in w and "outside [0, 125]" in w for w in rec.warnings)
    # plain EDF: the patient field is free text, never parsed as EDF+ subfields
    plain = write_edf(
        tmp_path / "plain.edf",
        wfdb_source,
        annotations=False,
        patient=edfio.Patient(code="Jane", sex="F", birthdate=datetime.date(1970, 1, 1)),
    )
    assert read_record(plain).patient.sex is None


# --- damaged and unsuitable files ------------------------------------------------------------------------


def _different_rates(path: Path, record: EcgRecord) -> None:
    write_edf(path, record, rates={"V1": 250})


def _edf_plus_d(path: Path, record: EcgRecord) -> None:
    write_edf(path, record)
    patch_header(path, 192, 44, "EDF+D")


def _gap_in_edf_plus_c(path: Path, record: EcgRecord) -> None:
    write_edf(path, record)
    raw = path.read_bytes()
    assert raw.count(b"+2\x14\x14\x00") == 1  # the time-keeping annotation of the third data record
    path.write_bytes(raw.replace(b"+2\x14\x14\x00", b"+7\x14\x14\x00"))


def _missing_lead(path: Path, record: EcgRecord) -> None:
    write_edf(path, record, leads=tuple(lead for lead in CANONICAL_LEADS if lead != "V3"))


def _truncated(path: Path, record: EcgRecord) -> None:
    write_edf(path, record)
    path.write_bytes(path.read_bytes()[:-100])


def _trailing(path: Path, record: EcgRecord) -> None:
    write_edf(path, record)
    path.write_bytes(path.read_bytes() + b"\x00" * 100)


def _field(field: str, signal: int, text: str) -> Callable[[Path, EcgRecord], None]:
    def make(path: Path, record: EcgRecord) -> None:
        write_edf(path, record, annotations=False)
        patch_field(path, field, signal, text)

    return make


def _header(start: int, width: int, text: str) -> Callable[[Path, EcgRecord], None]:
    def make(path: Path, record: EcgRecord) -> None:
        write_edf(path, record, annotations=False)
        patch_header(path, start, width, text)

    return make


@pytest.mark.parametrize(
    "make, error, message",
    [
        (_different_rates, HeaderError, r"different sampling rates \(I 500 Hz, II 500 Hz, .*V1 250 Hz"),
        (_edf_plus_d, SignalFileError, r"an EDF\+D \(discontinuous\) file"),
        (_gap_in_edf_plus_c, SignalFileError, r"declares EDF\+C but its time-keeping annotations show gaps"),
        (_missing_lead, LeadError, r"missing lead V3; the EDF signals are \['ECG I', 'ECG II'"),
        (_truncated, SignalFileError, r"but the header declares 10 data records .* \(truncated\)"),
        (_trailing, SignalFileError, r"followed by data the header does not declare"),
        (
            _field("dimension", 0, "mmHg"),
            HeaderError,
            r"'ECG I' has physical dimension 'mmHg', not a voltage",
        ),
        (_field("dimension", 3, ""), HeaderError, r"'ECG aVR' has physical dimension '', not a voltage"),
        (
            _field("physical_max", 2, "-32000"),
            HeaderError,
            r"signal 'ECG III' has physical range \[-32000, "
            r"-32000\]: no calibration",
        ),
        (_field("digital_max", 4, "-32000"), HeaderError, r"'ECG aVL' has digital range \[-32000, -32000\]"),
        (_field("label", 5, "EEG C3"), LeadError, r"missing lead aVF"),
        (_field("samples", 0, "x"), HeaderError, r"samples per data record of signal 1 'x' is not a number"),
        (_header(244, 8, "0"), HeaderError, r"data record duration 0 s is not positive"),
        (_header(236, 8, "-1"), SignalFileError, r"number of data records is -1"),
        (_header(184, 8, "4096"), SignalFileError, r"declares 4096 header bytes; 12 signals need 3328"),
    ],
)
def test_damaged_files_are_refused_in_one_line(
    tmp_path: Path,
    wfdb_source: EcgRecord,
    one_line: OneLine,
    make: Callable[[Path, EcgRecord], None],
    error: type[RecordError],
    message: str,
) -> None:
    path = tmp_path / "bad.edf"
    make(path, wfdb_source)
    with pytest.raises(error, match=message) as e:
        read_record(path)
    one_line(e.value, path)


def test_a_file_shorter_than_the_header_is_refused(tmp_path: Path, one_line: OneLine) -> None:
    path = tmp_path / "stub.edf"
    path.write_bytes(b"0       " + b" " * 100)
    with pytest.raises(SignalFileError, match="shorter than the 256-byte EDF header") as e:
        edf.read(path)
    one_line(e.value, path)


def test_a_file_of_another_version_is_refused(
    tmp_path: Path, wfdb_source: EcgRecord, one_line: OneLine
) -> None:
    path = write_edf(tmp_path / "bdf_like.edf", wfdb_source)
    patch_header(path, 0, 8, "1")
    with pytest.raises(SignalFileError, match="version field b'1       ' is not EDF's") as e:
        edf.read(path)
    one_line(e.value, path)


def test_without_edfio_the_extra_is_named(
    tmp_path: Path, wfdb_source: EcgRecord, monkeypatch: pytest.MonkeyPatch, one_line: OneLine
) -> None:
    path = write_edf(tmp_path / "ok.edf", wfdb_source)
    monkeypatch.setitem(sys.modules, "edfio", None)  # import edfio now raises ImportError
    with pytest.raises(SignalFileError, match=r"needs edfio: pip install 'diagecg\[edf\]'") as e:
        read_record(path)
    one_line(e.value, path)

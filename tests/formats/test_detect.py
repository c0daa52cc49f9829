"""diagecg.formats: which format a file is, from its content, and finding records in a folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from diagecg.errors import RecordError, RecordNotFoundError, SignalFileError
from diagecg.formats import detect_format, find_records, read

RECORDS = Path(__file__).resolve().parents[1] / "fixtures" / "records"
PHILIPS = Path(__file__).resolve().parents[1] / "fixtures" / "formats" / "philips"
AECG = '<?xml version="1.0"?>\n<AnnotatedECG xmlns="urn:hl7-org:v3"><id root="x"/></AnnotatedECG>\n'
MUSE = (
    '<?xml version="1.0" encoding="ISO-8859-1"?>\n<!DOCTYPE RestingECG SYSTEM "restecg.dtd">\n<RestingECG/>\n'
)


@pytest.fixture()
def dicom_file() -> Path:
    pydicom = pytest.importorskip("pydicom")
    return Path(pydicom.data.get_testdata_file("waveform_ecg.dcm"))


def test_a_wfdb_record_is_found_by_its_header_a_signal_file_or_its_bare_name() -> None:
    for name in ("00002_lr.hea", "00002_lr.dat", "00002_lr", "C00002.mat"):
        assert detect_format(RECORDS / name) == "wfdb", name


def test_content_decides_not_the_suffix(tmp_path: Path, dicom_file: Path) -> None:
    (tmp_path / "IM0001").write_bytes(dicom_file.read_bytes())  # DICOM files often have no suffix
    (tmp_path / "ecg.txt").write_text(AECG)
    (tmp_path / "muse.dat").write_text(MUSE)  # no header beside it: not a WFDB signal file
    (tmp_path / "edf.bin").write_bytes(b"0       " + b" " * 248)
    assert detect_format(tmp_path / "IM0001") == "dicom"
    assert detect_format(tmp_path / "ecg.txt") == "hl7aecg"
    assert detect_format(tmp_path / "muse.dat") == "muse"
    assert detect_format(tmp_path / "edf.bin") == "edf"


@pytest.mark.parametrize("name", ["129DYPRG.XML", "ad4d3d80-d165_1-04_orig.xml"])
def test_real_philips_files_are_detected_in_utf8_and_utf16(tmp_path: Path, name: str) -> None:
    src = PHILIPS / name  # SierraECG 1.03 (UTF-8) and PhilipsECG 1.04 (UTF-16 with a BOM)
    (tmp_path / "IM0001").write_bytes(src.read_bytes())
    assert detect_format(src) == "philips"
    assert detect_format(tmp_path / "IM0001") == "philips"
    assert find_records(tmp_path) == [tmp_path / "IM0001"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("cardiosoft.xml", b'<?xml version="1.0"?><CardiologyXML/>', "GE CardioSoft"),
        ("other.xml", b"<?xml version='1.0'?><html><body/></html>", "root <html>"),
        ("broken.xml", b"<?xml version='1.0'?><<RestingECG>", "not well-formed XML"),
        ("rec.scp", b"\x12\x34" + b"\x00" * 200, "SCP-ECG"),
        ("rec.bdf", b"\xffBIOSEMI" + b" " * 248, "BDF"),
        ("noise.bin", bytes(range(256)) * 4, "not an ECG format diagecg recognises"),
        ("empty.xml", b"", "empty"),
    ],
)
def test_unsupported_or_unknown_files_are_named_in_one_line(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SignalFileError, match=message) as e:
        detect_format(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_missing_paths_and_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RecordNotFoundError):
        detect_format(tmp_path / "nothing.dcm")
    with pytest.raises(RecordError, match="not a file"):
        detect_format(tmp_path)
    with pytest.raises(ValueError, match="unknown ECG format 'scp'"):
        read(RECORDS / "00002_lr.hea", "scp")


def test_find_records_takes_every_format_by_content_and_skips_the_rest(
    tmp_path: Path, dicom_file: Path
) -> None:
    for name in ("00002_lr.hea", "00002_lr.dat", "C00002.hea", "C00002.mat"):
        shutil.copy(RECORDS / name, tmp_path / name)
    sub = tmp_path / "cart" / "2024"
    sub.mkdir(parents=True)
    (sub / "IM0001").write_bytes(dicom_file.read_bytes())
    (sub / "ecg.xml").write_text(AECG)
    (sub / "notes.xml").write_text("<notes/>")
    (sub / "readme.txt").write_text("not an ECG")
    (tmp_path / ".hidden.hea").write_text("x")
    found = [p.relative_to(tmp_path).as_posix() for p in find_records(tmp_path)]
    assert found == ["00002_lr.hea", "C00002.hea", "cart/2024/IM0001", "cart/2024/ecg.xml"]

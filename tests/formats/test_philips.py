"""The Philips SierraECG XML reader: two real files (SierraECG 1.03 and PhilipsECG 1.04, UTF-16), checked
against sierraecg's raw output and, for the 1.04 file, against the HL7 aECG conversion published with it;
then corrupted copies, each refused in one line."""

from __future__ import annotations

import base64
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from diagecg.constants import CANONICAL_LEADS
from diagecg.errors import HeaderError, LeadError, RecordError, SignalFileError
from diagecg.formats import detect_format, find_records, philips
from diagecg.io import read_record

sierraecg = pytest.importorskip("sierraecg")
from sierraecg.lzw import LzwDecoder  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "formats" / "philips"
V103 = FIXTURES / "129DYPRG.XML"  # SierraECG 1.03, UTF-8, HeartStart MRx
V104 = FIXTURES / "ad4d3d80-d165_1-04_orig.xml"  # PhilipsECG 1.04, UTF-16, PageWriter Touch
V104_AECG = FIXTURES / "ad4d3d80-d165_1-04_converted.xml"  # the same ECG as HL7 aECG (see SOURCE.md)
UV_PER_BIT = 5.0  # both files
ECG_SAMPLES = {V103: 5264, V104: 5300}  # of 5500 per lead; the rest is the calibration segment
_PAYLOAD = re.compile(r"(<parsedwaveforms[^>]*>)([^<]*)(</parsedwaveforms>)")


# --- editing real files ---------------------------------------------------------------------------------


def _encoding(path: Path) -> str:
    return "utf-16" if path.read_bytes()[:2] == b"\xff\xfe" else "utf-8"


def edited(src: Path, dst: Path, *replacements: tuple[str, str]) -> Path:
    """A copy of ``src`` (same encoding) with each ``old`` replaced once by ``new``."""
    text = src.read_bytes().decode(_encoding(src))
    for old, new in replacements:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    dst.write_bytes(text.encode(_encoding(src)))
    return dst


def xli_chunks(path: Path) -> list[bytes]:
    """The XLI chunks (8-byte header + LZW codes) of a file's waveform data."""
    match = _PAYLOAD.search(path.read_bytes().decode(_encoding(path)))
    assert match is not None
    data = base64.b64decode("".join(match.group(2).split()))
    chunks, offset = [], 0
    while offset < len(data):
        end = offset + 8 + int.from_bytes(data[offset : offset + 4], "little", signed=True)
        chunks.append(data[offset:end])
        offset = end
    return chunks


def with_payload(src: Path, dst: Path, payload: bytes) -> Path:
    text = src.read_bytes().decode(_encoding(src))
    text = _PAYLOAD.sub(lambda m: m.group(1) + base64.b64encode(payload).decode() + m.group(3), text)
    dst.write_bytes(text.encode(_encoding(src)))
    return dst


def lzw_codes(codes: list[int]) -> bytes:
    """10-bit codes packed most significant bit first, as XLI stores them."""
    bits = "".join(f"{c:010b}" for c in codes)
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def aecg_rhythm_mv(path: Path) -> dict[str, np.ndarray]:
    """The RHYTHM leads of an HL7 aECG, ``origin + scale x digits`` in mV (a parse independent of ours)."""
    ns = {"h": "urn:hl7-org:v3"}
    rhythm = ET.parse(path).getroot().find(".//h:series/h:component/h:sequenceSet", ns)
    assert rhythm is not None

    def value(element: ET.Element, path: str, attribute: str | None = None) -> str:
        found = element.find(path, ns)
        assert found is not None, path
        text = found.text if attribute is None else found.get(attribute)
        assert text is not None, path
        return text

    names = {"AVR": "aVR", "AVL": "aVL", "AVF": "aVF"}
    leads = {}
    for sequence in rhythm.iterfind("h:component/h:sequence", ns):
        code = value(sequence, "h:code", "code")
        if code.startswith("MDC_ECG_LEAD_"):
            digits = np.array(value(sequence, "h:value/h:digits").split(), dtype=np.float64)
            origin = float(value(sequence, "h:value/h:origin", "value"))
            scale = float(value(sequence, "h:value/h:scale", "value"))
            assert value(sequence, "h:value/h:scale", "unit") == "uV"
            leads[names.get(code[13:], code[13:])] = (origin + scale * digits) / 1000
    return leads


# --- real files -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [V103, V104], ids=["1.03", "1.04"])
def test_real_files_read_as_sierraecg_decodes_them_times_the_resolution(path: Path) -> None:
    record = read_record(path)
    n = ECG_SAMPLES[path]
    assert record.signal.shape == (12, n) and record.signal.dtype == np.float32
    assert record.fs_hz == 500.0 and record.lead_names == CANONICAL_LEADS
    assert record.record_id == path.stem and record.source == str(path)
    raw = sierraecg.read_file(str(path))
    assert [lead.label for lead in raw.leads] == list(CANONICAL_LEADS)  # the files' order is canonical
    expected = np.stack([lead.samples[:n] for lead in raw.leads]).astype(np.float64) * UV_PER_BIT / 1000
    np.testing.assert_allclose(record.signal, expected, rtol=0, atol=1e-6)
    peak_to_peak = np.ptp(record.signal, axis=1)  # mV
    assert (peak_to_peak > 0.3).all() and (peak_to_peak < 15).all(), peak_to_peak


def test_a_few_samples_are_pinned() -> None:
    # sierraecg's integers for lead I and V1 of the 1.03 file (48, 44, 40, 34, 31 and 33, 37, 38, 39, 38)
    record = read_record(V103)
    np.testing.assert_allclose(record.signal[0, :5], [0.240, 0.220, 0.200, 0.170, 0.155], atol=1e-6)
    np.testing.assert_allclose(record.signal[6, :5], [0.165, 0.185, 0.190, 0.195, 0.190], atol=1e-6)


def test_the_1_04_file_matches_its_aecg_conversion() -> None:
    """The same ECG as aECG, by (most likely) Philips' software: a second decoder of XLI and of the III-aVF
    residuals.
    The two agree within 4 bits (20 uV); the aECG keeps the 1 mV calibration pulse our reader cuts off."""
    record = read_record(V104)
    reference = aecg_rhythm_mv(V104_AECG)
    assert sorted(reference) == sorted(CANONICAL_LEADS)
    n = record.signal.shape[1]
    for k, lead in enumerate(CANONICAL_LEADS):
        assert reference[lead].shape == (5500,)
        np.testing.assert_allclose(
            record.signal[k], reference[lead][:n], rtol=0, atol=0.020 + 1e-6, err_msg=lead
        )
        assert np.corrcoef(record.signal[k], reference[lead][:n])[0, 1] > 0.99, lead
        np.testing.assert_allclose(reference[lead][5350:5450], 1.0, atol=0.011, err_msg=lead)  # the pulse


def test_the_calibration_segment_is_cut_with_a_warning() -> None:
    record = read_record(V104)
    assert any(
        "dropped the last 200 samples (0.40 s), the cart's calibration segment" in w
        and "a 1.00 mV pulse" in w
        and "check the amplitude" not in w
        for w in record.warnings
    )


def test_a_wrong_resolution_shows_in_the_calibration_warning(tmp_path: Path) -> None:
    path = edited(V103, tmp_path / "ecg.xml", ("<signalresolution>5<", "<signalresolution>2.5<"))
    record = read_record(path)
    assert any(
        "a 0.50 mV pulse, not the 1 mV carts write: check the amplitude resolution" in w
        for w in record.warnings
    )


def test_patient_fields_come_from_generalpatientdata() -> None:
    assert read_record(V103).patient.age_years == 50.0 and read_record(V103).patient.sex == "male"
    record = read_record(V104)  # born 1976-01-01, recorded 2008-12-23; height and weight are "---"
    assert (record.patient.age_years, record.patient.sex) == (32.0, "female")
    assert record.patient.height_cm is None and record.patient.weight_kg is None
    assert "patient height inch '---' is not a number; ignored" in record.warnings


def test_height_weight_and_implausible_values(tmp_path: Path) -> None:
    path = edited(
        V104,
        tmp_path / "ecg.xml",
        ("<inch>---</inch>", "<inch>70</inch>"),
        ("<lb>---</lb>", "<kg>82.5</kg>"),
        ("<dateofbirth>1976-01-01</dateofbirth>", "<years>300</years>"),
    )
    record = read_record(path)
    assert record.patient.height_cm == pytest.approx(177.8) and record.patient.weight_kg == 82.5
    assert record.patient.age_years is None
    assert any("patient age '300 years' is outside [0, 125]; ignored" in w for w in record.warnings)


# --- detection ------------------------------------------------------------------------------------------


def test_philips_files_are_detected_by_content_in_utf8_and_utf16(tmp_path: Path) -> None:
    for src, name in ((V103, "IM0001"), (V104, "ecg.txt")):
        shutil.copy(src, tmp_path / name)
        assert detect_format(tmp_path / name) == "philips"
    shutil.copy(V104_AECG, tmp_path / "aecg.xml")
    assert detect_format(tmp_path / "aecg.xml") == "hl7aecg"
    assert [p.name for p in find_records(tmp_path)] == ["IM0001", "aecg.xml", "ecg.txt"]


# --- broken files ---------------------------------------------------------------------------------------


def _truncated(tmp_path: Path) -> Path:
    path = tmp_path / "ecg.xml"
    path.write_bytes(V103.read_bytes()[:30_000])
    return path


def _chunks_dropped(tmp_path: Path) -> Path:
    return with_payload(V103, tmp_path / "ecg.xml", b"".join(xli_chunks(V103)[:11]))


def _payload_cut(tmp_path: Path) -> Path:
    return with_payload(V103, tmp_path / "ecg.xml", b"".join(xli_chunks(V103))[:20_000])


def _codes_overwritten(tmp_path: Path) -> Path:
    chunks = xli_chunks(V103)
    chunks[0] = chunks[0][:100] + b"\xff" * 16 + chunks[0][116:]  # code 1023 ends the chunk early
    return with_payload(V103, tmp_path / "ecg.xml", b"".join(chunks))


def _v103(*replacements: tuple[str, str]) -> Callable[[Path], Path]:
    return lambda tmp_path: edited(V103, tmp_path / "ecg.xml", *replacements)


def _v104(*replacements: tuple[str, str]) -> Callable[[Path], Path]:
    return lambda tmp_path: edited(V104, tmp_path / "ecg.xml", *replacements)


BROKEN: dict[str, tuple[Callable[[Path], Path], type[RecordError], str]] = {
    "truncated XML": (_truncated, SignalFileError, "not well-formed XML"),
    "no sampling rate": (
        _v103(("<samplingrate>500</samplingrate>", "")),
        HeaderError,
        "signalcharacteristics gives no samplingrate; refusing to guess",
    ),
    "rate out of range": (
        _v103(("<samplingrate>500<", "<samplingrate>5<")),
        HeaderError,
        "5 Hz is not an ECG's",
    ),
    "zero resolution": (
        _v103(("<signalresolution>5<", "<signalresolution>0<")),
        HeaderError,
        "signalcharacteristics/signalresolution is 0, not a positive number",
    ),
    "nan resolution": (
        _v103(("<signalresolution>5<", "<signalresolution>NaN<")),
        HeaderError,
        "is 'NaN', not a finite number",
    ),
    "no resolution": (
        _v104(("<resolution>5</resolution>", ""), (' resolution="5"', "")),
        HeaderError,
        "no amplitude resolution (uV per bit)",
    ),
    "two resolutions": (
        _v104((' resolution="5"', ' resolution="2.5"')),
        HeaderError,
        "disagreeing amplitude resolution (uV per bit): signalcharacteristics/resolution 5, "
        "parsedwaveforms@resolution 2.5",
    ),
    "two rates": (
        _v104(('samplespersecond="500"', 'samplespersecond="1000"')),
        HeaderError,
        "disagreeing sampling rate: signalcharacteristics/samplingrate 500, "
        "parsedwaveforms@samplespersecond 1000",
    ),
    "invalid base64": (
        _v103(('nbitspersample="16">', 'nbitspersample="16">!!')),
        SignalFileError,
        "parsedwaveforms is not valid base64",
    ),
    "LZW codes overwritten": (
        _codes_overwritten,
        SignalFileError,
        "lead I decodes to 1388 samples; durationperchannel declares 5500",
    ),
    "payload cut": (_payload_cut, SignalFileError, "runs past the end of the waveform data"),
    "chunks dropped": (
        _chunks_dropped,
        SignalFileError,
        "the waveform data holds 11 leads; leadlabels names 12",
    ),
    "lead V6 missing": (
        _v104(
            ('numberofleads="12"', 'numberofleads="11"'),
            ('V5 V6" durationperchannel', 'V5" durationperchannel'),
        ),
        LeadError,
        "missing lead V6",
    ),
    "leads reordered": (
        _v104(
            ('leadlabels="I II', 'leadlabels="II I'),
        ),
        HeaderError,
        "rebuilds III-aVF from the first six, which must be I II III aVR aVL aVF",
    ),
    "wrong duration": (
        _v103(('durationperchannel="11000"', 'durationperchannel="10000"')),
        SignalFileError,
        "lead I decodes to 5500 samples; durationperchannel declares 5000",
    ),
    "huge duration": (
        _v103(('durationperchannel="11000"', 'durationperchannel="9000000000"')),
        SignalFileError,
        "declares 4500000000 samples x 12 leads, more than diagecg reads",
    ),
    "uncompressed": (
        _v103(('compressflag="True"', 'compressflag="False"')),
        SignalFileError,
        "compression is 'none'; diagecg reads XLI-compressed files",
    ),
    "signal offset": (
        _v103(("<signaloffset>0<", "<signaloffset>100<")),
        HeaderError,
        "signalcharacteristics/signaloffset is 100; files with a signal offset are not",
    ),
    "unsigned": (_v103(("<signalsigned>True<", "<signalsigned>False<")), HeaderError, "signed samples only"),
    "unnamed 1.03 leads": (
        _v103(("<acquisitiontype>STD-12<", "<acquisitiontype>EASI<")),
        HeaderError,
        "no leadlabels and acquisitiontype 'EASI': the leads are unnamed",
    ),
    "unsupported version": (
        _v103(("<documentversion>1.03<", "<documentversion>1.05<")),
        SignalFileError,
        "sierraecg cannot decode the file: UnsupportedXmlFileError: Files of type "
        "SierraECG 1.05 are unsupported",
    ),
    "entity declaration": (
        _v103(
            (
                '<?xml version="1.0" encoding="UTF-8"?>',
                '<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE r [<!ENTITY e "x">]>',
            )
        ),
        SignalFileError,
        "sierraecg cannot decode the file: EntitiesForbidden",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_files_are_refused_in_one_line(
    tmp_path: Path, one_line: Callable[..., str], case: str
) -> None:
    make, error, expected = BROKEN[case]
    path = make(tmp_path)
    with pytest.raises(error) as excinfo:
        read_record(path)
    assert expected in one_line(excinfo.value, path)


def test_an_lzw_bomb_is_refused_before_sierraecg_decodes_it(
    tmp_path: Path, one_line: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # each new code one byte longer than the last, then the longest (768 bytes) over and over: 3 460 bytes
    # of codes that decode to 1.8 MB (530-fold; sierraecg holds every byte as a Python int)
    codes = lzw_codes([65, *range(256, 1023), *[1022] * 2000])
    bomb = len(codes).to_bytes(4, "little") + b"\x01\x00\x00\x00" + codes
    path = with_payload(V103, tmp_path / "ecg.xml", bomb + b"".join(xli_chunks(V103)[1:]))
    monkeypatch.setattr(sierraecg, "read_file", lambda *_: pytest.fail("sierraecg ran"))
    with pytest.raises(SignalFileError) as excinfo:
        read_record(path)
    message = one_line(excinfo.value, path)
    assert "lead I decodes to 915648 samples; durationperchannel declares 5500" in message


def test_the_lzw_walk_counts_what_sierraecg_decodes() -> None:
    for path in (V103, V104):
        for chunk in xli_chunks(path):
            decoder, count = LzwDecoder(chunk[8:], bits=10), 0
            while decoder.read() != -1:
                count += 1
            assert philips._lzw_decoded_bytes(chunk[8:]) == count


def test_missing_sierraecg_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, one_line: Callable[..., str]
) -> None:
    monkeypatch.setitem(sys.modules, "sierraecg", None)  # import sierraecg now raises ImportError
    with pytest.raises(SignalFileError) as excinfo:
        read_record(V103)
    assert "pip install 'diagecg[philips]'" in one_line(excinfo.value, V103)


def test_extra_or_oversized_xli_chunks_are_refused_before_decoding(
    tmp_path: Path, one_line: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 23: a zip of a Philips file whose waveform data was zero chunks (all-zero headers: 18 million
    empty chunks) cost 30 CPU-s and 1.4 GB; sierraecg decodes every chunk, the unnamed ones too."""
    import time

    monkeypatch.setattr(sierraecg, "read_file", lambda *_: pytest.fail("sierraecg ran"))
    chunks = xli_chunks(V103)
    cases = {
        "zeros": (bytes(4 << 20), "take at most"),
        "a 17th chunk": (b"".join([*chunks, chunks[-1]]), "more than 16 XLI chunks"),
    }
    codes = lzw_codes([65, *range(256, 1023), *[1022] * 40])  # an unnamed chunk that decodes past n
    big = len(codes).to_bytes(4, "little") + b"\x01\x00\x00\x00" + codes
    cases["an unnamed chunk over n"] = (b"".join([*chunks[:15], big]), "XLI chunk 16 decodes to")
    for name, (payload, expected) in cases.items():
        path = with_payload(V103, tmp_path / f"{name}.xml", payload)
        t = time.perf_counter()
        with pytest.raises(SignalFileError) as excinfo:
            read_record(path)
        assert expected in one_line(excinfo.value, path), name
        assert time.perf_counter() - t < 10, name

"""The HL7 aECG reader: the HL7 example and a CalECG file (checked against a second, regex-based parse),
a real PTB-XL record written as aECG (checked against the WFDB read), and broken files."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from diagecg.constants import CANONICAL_LEADS
from diagecg.errors import HeaderError, LeadError, SignalFileError
from diagecg.formats import aecg, detect_format
from diagecg.io import read_record
from diagecg.types import EcgRecord

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "formats" / "hl7aecg"
HL7_EXAMPLE = FIXTURES / "hl7_example_aecg.xml"
CALECG_EXAMPLE = FIXTURES / "calecg_example2_5s.xml"
EIGHT_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


def rhythm_by_regex(path: Path, scale_mv: float) -> dict[str, np.ndarray]:
    """A second parse of a fixture: the first digits block of each MDC lead code, times its scale."""
    text = path.read_text()
    rhythm = text[: text.index("<derivation>")]  # both fixtures put the median beats after the rhythm
    found = re.findall(r'code="MDC_ECG_LEAD_(\w+)".*?<digits>([^<]*)</digits>', rhythm, flags=re.S)
    names = {"AVR": "aVR", "AVL": "aVL", "AVF": "aVF"}
    return {names.get(code, code): np.array(d.split(), dtype=np.int64) * scale_mv for code, d in found}


# --- writing aECG files ---------------------------------------------------------------------------------


def lead_sequence(
    code: str,
    digits: np.ndarray,
    *,
    origin: str = '<origin value="0" unit="uV"/>',
    scale: str = '<scale value="1" unit="uV"/>',
) -> str:
    return (
        f'<component><sequence><code code="{code}" codeSystem="2.16.840.1.113883.6.24"/>'
        f'<value xsi:type="SLIST_PQ">{origin}{scale}<digits>{" ".join(map(str, digits))}</digits>'
        f"</value></sequence></component>"
    )


RELATIVE_TIME_2MS = (
    '<code code="TIME_RELATIVE"/><value xsi:type="GLIST_PQ"><head value="0" unit="s"/>'
    '<increment value="0.002" unit="s"/></value>'
)
ABSOLUTE_TIME_2MS = (
    '<code code="TIME_ABSOLUTE"/><value xsi:type="GLIST_TS"><head value="20201030101010"/>'
    '<increment value="2" unit="ms"/></value>'
)


def rhythm_series(
    signal_mv: np.ndarray,
    leads: tuple[str, ...],
    *,
    code: str = "RHYTHM",
    time: str = RELATIVE_TIME_2MS,
    scale_uv: float = 1.0,
) -> str:
    sequences = "".join(
        lead_sequence(
            f"MDC_ECG_LEAD_{lead.upper()}",
            np.round(signal_mv[CANONICAL_LEADS.index(lead)] * 1000 / scale_uv).astype(np.int64),
            scale=f'<scale value="{scale_uv:g}" unit="uV"/>',
        )
        for lead in leads
    )
    return (
        f'<component><series><code code="{code}" codeSystem="2.16.840.1.113883.5.4"/><component>'
        f"<sequenceSet><component><sequence>{time}</sequence></component>{sequences}</sequenceSet>"
        f"</component></series></component>"
    )


def aecg_document(series: str, *, demographics: str = "", observations: str = "") -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<AnnotatedECG xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        '<id root="1.2.3"/><code code="93000" codeSystem="2.16.840.1.113883.6.12"/>'
        '<effectiveTime><center value="20201030101010"/></effectiveTime>'
        "<componentOf><timepointEvent><componentOf><subjectAssignment><subject><trialSubject>"
        f'<id extension="00002"/><subjectDemographicPerson>{demographics}</subjectDemographicPerson>'
        "</trialSubject></subject></subjectAssignment></componentOf></timepointEvent></componentOf>"
        f"{observations}{series}</AnnotatedECG>\n"
    )


def reported(code: str, value: str, unit: str) -> str:
    return (
        f'<controlVariable><relatedObservation><code code="{code}" codeSystem="2.16.840.1.113883.6.1"/>'
        f'<value xsi:type="PQ" value="{value}" unit="{unit}"/></relatedObservation></controlVariable>'
    )


def write_ptbxl_aecg(path: Path, src: EcgRecord, **series_options: object) -> Path:
    """``src`` (PTB-XL ecg_id 2, a 19-year-old man) as an aECG with a reported age and a sex code."""
    series = rhythm_series(src.signal, CANONICAL_LEADS, **series_options)  # type: ignore[arg-type]
    path.write_text(
        aecg_document(
            series,
            demographics='<administrativeGenderCode code="M"/>',
            observations=reported("21612-7", "19", "a"),
        )
    )
    return path


# --- the real examples ----------------------------------------------------------------------------------


def test_hl7_example_is_detected_and_read() -> None:
    assert detect_format(HL7_EXAMPLE) == "hl7aecg"
    rec = read_record(HL7_EXAMPLE)
    assert (rec.fs_hz, rec.signal.shape, rec.lead_names) == (500.0, (12, 5000), CANONICAL_LEADS)
    assert rec.record_id == "hl7_example_aecg"
    assert (rec.patient.age_years, rec.patient.sex) == (46.0, "male")
    assert rec.warnings == [
        "reported age 46 disagrees with the birth date 1953-05-08 (age 49 at the ECG); "
        "the reported age is used"
    ]
    reference = rhythm_by_regex(HL7_EXAMPLE, scale_mv=0.0025)  # origin 0 uV, scale 2.5 uV
    assert sorted(reference) == sorted(CANONICAL_LEADS)
    for k, lead in enumerate(CANONICAL_LEADS):
        np.testing.assert_allclose(rec.signal[k], reference[lead], rtol=0, atol=1e-6)


def test_calecg_example_relative_time_1000hz_age_from_birth_date() -> None:
    assert detect_format(CALECG_EXAMPLE) == "hl7aecg"
    rec = read_record(CALECG_EXAMPLE)
    assert (rec.fs_hz, rec.signal.shape) == (1000.0, (12, 5000))
    assert (rec.patient.age_years, rec.patient.sex) == (32.0, None)  # born 1971-06-16, ECG 2004-01-15
    assert rec.warnings == []  # the representative beats are a derivedSeries, never a candidate
    reference = rhythm_by_regex(CALECG_EXAMPLE, scale_mv=0.0025)
    for k, lead in enumerate(CANONICAL_LEADS):
        np.testing.assert_allclose(rec.signal[k], reference[lead], rtol=0, atol=1e-6)


# --- a real PTB-XL record written as aECG -------------------------------------------------------------------


@pytest.mark.parametrize(("time", "scale_uv"), [(RELATIVE_TIME_2MS, 1.0), (ABSOLUTE_TIME_2MS, 2.5)])
def test_ptbxl_record_as_aecg_equals_the_wfdb_read(
    tmp_path: Path, wfdb_source: EcgRecord, time: str, scale_uv: float
) -> None:
    src = wfdb_source
    path = write_ptbxl_aecg(tmp_path / "00002.xml", src, time=time, scale_uv=scale_uv)
    rec = read_record(path)
    assert (rec.fs_hz, rec.lead_names, rec.signal.shape) == (500.0, CANONICAL_LEADS, src.signal.shape)
    assert (src.patient.age_years, src.patient.sex) == (19.0, "male")
    assert (rec.patient.age_years, rec.patient.sex) == (src.patient.age_years, src.patient.sex)
    assert rec.record_id == "00002" and rec.warnings == []
    np.testing.assert_allclose(rec.signal, src.signal, rtol=0, atol=scale_uv / 2 / 1000 + 1e-6)


def test_eight_stored_leads_get_their_limb_leads_derived(tmp_path: Path, wfdb_source: EcgRecord) -> None:
    src = wfdb_source
    path = tmp_path / "eight.xml"
    path.write_text(aecg_document(rhythm_series(src.signal, EIGHT_LEADS)))
    rec = read_record(path)
    assert rec.warnings == ["leads III, aVR, aVL, aVF derived from I and II (the file stores 8 leads)"]
    lead_i, lead_ii = src.signal[0].astype(np.float64), src.signal[1].astype(np.float64)
    np.testing.assert_allclose(rec.signal[2], lead_ii - lead_i, rtol=0, atol=1e-6)
    np.testing.assert_allclose(rec.signal[3], -(lead_i + lead_ii) / 2, rtol=0, atol=1e-6)
    np.testing.assert_allclose(rec.signal[4], lead_i - lead_ii / 2, rtol=0, atol=1e-6)
    np.testing.assert_allclose(rec.signal[5], lead_ii - lead_i / 2, rtol=0, atol=1e-6)


def test_rhythm_series_is_preferred_to_a_median_beat_series(tmp_path: Path, wfdb_source: EcgRecord) -> None:
    src = wfdb_source
    beat = rhythm_series(src.signal[:, 1000:1600], CANONICAL_LEADS, code="REPRESENTATIVE_BEAT")
    path = tmp_path / "two.xml"
    path.write_text(aecg_document(beat + rhythm_series(src.signal, CANONICAL_LEADS)))
    rec = read_record(path)
    assert rec.signal.shape == (12, 5000)
    assert rec.warnings == [
        "read series 2 'RHYTHM' sequence set 1 (12 leads x 5000 samples); ignored "
        "series 1 'REPRESENTATIVE_BEAT' sequence set 1 (12 leads x 600 samples)"
    ]


def test_a_file_with_only_a_median_beat_series_is_refused(
    tmp_path: Path, wfdb_source: EcgRecord, one_line: Callable[..., str]
) -> None:
    """A representative beat is one averaged complex; repeated over 10 s it would read as a rhythm."""
    beat = wfdb_source.signal[:, 1000:1600]
    path = tmp_path / "median.xml"
    path.write_text(
        aecg_document(rhythm_series(np.tile(beat, (1, 9)), CANONICAL_LEADS, code="REPRESENTATIVE_BEAT"))
    )
    with pytest.raises(SignalFileError, match="only a representative") as e:
        read_record(path)
    assert "no rhythm strip" in one_line(e.value, path)


def test_patient_from_birth_date_height_weight_and_implausible_values(
    tmp_path: Path, wfdb_source: EcgRecord
) -> None:
    series = rhythm_series(wfdb_source.signal, CANONICAL_LEADS)
    path = tmp_path / "patient.xml"
    sex_and_birth = '<administrativeGenderCode code="F"/><birthTime value="19601031"/>'
    height_and_weight = reported("8302-2", "1.65", "m") + reported("29463-7", "61", "kg")
    path.write_text(aecg_document(series, demographics=sex_and_birth, observations=height_and_weight))
    rec = read_record(path)
    assert (rec.patient.age_years, rec.patient.sex, rec.patient.weight_kg) == (59.0, "female", 61.0)
    assert rec.patient.height_cm == pytest.approx(165.0)
    bad_age_and_weight = reported("21612-7", "300", "a") + reported("29463-7", "61", "[stone]")
    path.write_text(
        aecg_document(
            series, demographics='<administrativeGenderCode code="X"/>', observations=bad_age_and_weight
        )
    )
    rec = read_record(path)
    assert rec.patient.age_years is None and rec.patient.sex is None and rec.patient.weight_kg is None
    assert rec.warnings == [
        "patient age '300 a' is outside [0, 125]; ignored",
        "subject observation weight '61' '[stone]' is not understood (units: kg, g, [lb_av]); ignored",
        "administrativeGenderCode 'X' is not M or F; ignored",
    ]


# --- bad files ------------------------------------------------------------------------------------------


def _replace(old: str, new: str, count: int = -1) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, count)

    return edit


def _drop_lead(code: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        return re.sub(rf'<component><sequence><code code="{code}".*?</component>', "", text, count=1)

    return edit


def _shorten_lead(text: str) -> str:
    return re.sub(r'(MDC_ECG_LEAD_V2".*?<digits>)(\S+ )', r"\1", text, count=1, flags=re.S)


BAD_EDITS: dict[str, tuple[Callable[[str], str], type[Exception], str]] = {
    "malformed XML": (lambda t: t[: len(t) // 2], SignalFileError, "not well-formed XML"),
    "no time sequence": (
        _replace('<code code="TIME_RELATIVE"/>', '<code code="TIME_FOO"/>'),
        HeaderError,
        "no TIME_ABSOLUTE or TIME_RELATIVE sequence; the sampling rate is unknown",
    ),
    "no increment": (
        _replace('<increment value="0.002" unit="s"/>', ""),
        HeaderError,
        "the TIME_RELATIVE sequence has no increment",
    ),
    "zero increment": (
        _replace('<increment value="0.002" unit="s"/>', '<increment value="0" unit="s"/>'),
        HeaderError,
        "sampling increment '0' s must be a positive number",
    ),
    "increment in Hz": (
        _replace('<increment value="0.002" unit="s"/>', '<increment value="500" unit="Hz"/>'),
        HeaderError,
        "sampling increment unit 'Hz' is not a time unit",
    ),
    "no scale": (
        _replace('<scale value="1" unit="uV"/>', "", 1),
        HeaderError,
        "lead MDC_ECG_LEAD_I has no scale; refusing to guess",
    ),
    "zero scale": (
        _replace('<scale value="1" unit="uV"/>', '<scale value="0" unit="uV"/>', 1),
        HeaderError,
        "lead MDC_ECG_LEAD_I has scale '0'; it must be a positive number",
    ),
    "unknown unit": (
        _replace('<scale value="1" unit="uV"/>', '<scale value="1" unit="mm[Hg]"/>', 1),
        HeaderError,
        "lead MDC_ECG_LEAD_I has scale unit 'mm[Hg]', not a voltage",
    ),
    "no origin": (
        _replace('<origin value="0" unit="uV"/>', "", 1),
        HeaderError,
        "lead MDC_ECG_LEAD_I has no origin",
    ),
    "lead missing": (_drop_lead("MDC_ECG_LEAD_V3"), LeadError, "missing lead V3"),
    "digits count mismatch": (
        _shorten_lead,
        SignalFileError,
        "MDC_ECG_LEAD_V1 5000, MDC_ECG_LEAD_V2 4999, MDC_ECG_LEAD_V3 5000",
    ),
    "non-integer digits": (
        lambda t: re.sub(r"<digits>(\S+)", "<digits>1.5", t, count=1),
        SignalFileError,
        "the digits of lead MDC_ECG_LEAD_I are not 5000 whitespace-separated integers",
    ),
    "not SLIST_PQ": (
        _replace('xsi:type="SLIST_PQ"', 'xsi:type="SLIST_INT"', 1),
        SignalFileError,
        "lead MDC_ECG_LEAD_I has a value of type 'SLIST_INT'",
    ),
    "no series": (
        lambda t: re.sub(r"<component><series>.*</series></component>", "", t, flags=re.S),
        SignalFileError,
        "holds no waveform series",
    ),
}


@pytest.mark.parametrize("case", list(BAD_EDITS))
def test_broken_file_is_refused_in_one_line(
    tmp_path: Path, wfdb_source: EcgRecord, one_line: Callable[..., str], case: str
) -> None:
    edit, error, expected = BAD_EDITS[case]
    path = write_ptbxl_aecg(tmp_path / "broken.xml", wfdb_source)
    path.write_text(edit(path.read_text()))
    with pytest.raises(error) as excinfo:
        read_record(path)
    assert expected in one_line(excinfo.value, path)


def test_declared_size_is_checked_before_parsing_digits(
    monkeypatch: pytest.MonkeyPatch, one_line: Callable[..., str]
) -> None:
    monkeypatch.setattr("diagecg.formats.aecg.MAX_RECORD_SAMPLES", 50_000)
    with pytest.raises(SignalFileError) as excinfo:
        read_record(HL7_EXAMPLE)
    assert "12 leads x 5000 samples is more than diagecg reads" in one_line(excinfo.value, HL7_EXAMPLE)


def test_entity_expansion_bomb_is_refused(tmp_path: Path, one_line: Callable[..., str]) -> None:
    entities = ['<!ENTITY e0 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">']
    entities += [f'<!ENTITY e{i} "{f"&e{i - 1};" * 10}">' for i in range(1, 10)]
    path = tmp_path / "bomb.xml"
    path.write_text(
        f'<?xml version="1.0"?>\n<!DOCTYPE AnnotatedECG [{"".join(entities)}]>\n'
        '<AnnotatedECG xmlns="urn:hl7-org:v3"><text>&e9;</text></AnnotatedECG>\n'
    )
    with pytest.raises(SignalFileError) as excinfo:
        read_record(path)
    assert "amplification" in one_line(excinfo.value, path)


def test_reader_refuses_another_xml_root(tmp_path: Path, one_line: Callable[..., str]) -> None:
    path = tmp_path / "muse.xml"
    path.write_text("<RestingECG><Waveform/></RestingECG>")
    with pytest.raises(SignalFileError) as excinfo:
        aecg.read(path)
    assert "XML root <RestingECG> is not an HL7 AnnotatedECG" in one_line(excinfo.value, path)

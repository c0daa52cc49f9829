"""read_record on real records (checked against wfdb as a second implementation) and on corrupted copies."""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import wfdb

from diagecg.config import QualityConfig
from diagecg.constants import CANONICAL_LEADS
from diagecg.errors import (
    HeaderError,
    LeadError,
    RecordError,
    RecordNotFoundError,
    SignalFileError,
    SignalQualityError,
)
from diagecg.header import parse_patient_comments, parse_wfdb_header
from diagecg.io import read_record, record_from_array
from diagecg.leads import canonical_lead_order

FIXTURE_RECORDS = ["00002_lr", "00003_lr", "00008_lr", "00002_hr", "C00002"]


def wfdb_reference(stem: Path) -> np.ndarray:
    """wfdb's physical signal in canonical lead order, (12, samples)."""
    rec = wfdb.rdrecord(str(stem))
    idx, _ = canonical_lead_order(rec.sig_name)
    return rec.p_signal[:, idx].T


# --- real records -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURE_RECORDS)
def test_fixture_records_match_wfdb(records_dir: Path, name: str) -> None:
    rec = read_record(records_dir / name)
    assert rec.signal.dtype == np.float32 and rec.signal.shape[0] == 12
    assert rec.lead_names == CANONICAL_LEADS
    assert rec.record_id == name and rec.source.endswith(f"{name}.hea")
    assert rec.warnings == []
    np.testing.assert_allclose(rec.signal, wfdb_reference(records_dir / name), atol=1e-6)


def test_ptbxl_100hz_and_500hz_records(records_dir: Path) -> None:
    lo = read_record(records_dir / "00002_lr.hea")
    hi = read_record(records_dir / "00002_hr.dat")  # a signal file names its record too
    assert (lo.fs_hz, lo.signal.shape, lo.duration_s) == (100.0, (12, 1000), 10.0)
    assert (hi.fs_hz, hi.signal.shape, hi.duration_s) == (500.0, (12, 5000), 10.0)
    assert lo.patient.age_years is None and lo.diagnoses == []  # PTB-XL headers have no comments


def test_challenge_record_equals_its_wfdb_source(records_dir: Path) -> None:
    chal = read_record(records_dir / "C00002.hea")
    src = read_record(records_dir / "00002_hr")
    np.testing.assert_array_equal(chal.signal, src.signal)
    assert chal.patient.age_years == 19 and chal.patient.sex == "male"
    assert chal.diagnoses == ["426177001"]


def test_ptb_diagnostic_15_leads_two_files_1000hz(shared_data: Path) -> None:
    stem = shared_data / "wfdb_sample" / "s0010_re"
    rec = read_record(stem)
    assert rec.fs_hz == 1000 and rec.signal.shape == (12, 38400)
    assert rec.patient.age_years == 81 and rec.patient.sex == "female"
    assert any("vx" in w and "vy" in w and "vz" in w and "Frank" in w for w in rec.warnings)
    assert any("no units" in w for w in rec.warnings)
    np.testing.assert_allclose(rec.signal, wfdb_reference(stem), atol=1e-6)


@pytest.mark.parametrize("fmt", ["212", "80", "24", "32", "61", "160"])
def test_storage_formats_decode_like_wfdb(copy_record, fmt: str) -> None:
    rc = copy_record("00002_lr")
    d = rc.digital()  # (12, 1000), 1000 units/mV
    gain = 1000.0
    limit = {"80": 127, "212": 2047}.get(fmt)
    if limit is not None:  # fewer bits: coarser resolution, so that nothing clips
        k = -(-(int(np.abs(d).max()) + 1) // limit)
        d, gain = d // k, 1000.0 / k
    if fmt in ("61", "160"):  # wfdb reads but cannot write these: pack them by hand
        raw = d.T.astype(">i2") if fmt == "61" else (d.T + 32768).astype("<u2")
        raw.tofile(rc.hea.parent / "r.dat")
        lines = [f"r 12 100 {d.shape[1]}"] + [
            f"r.dat {fmt} {gain}(0)/mV 16 0 {d[i, 0]} 0 0 {name}" for i, name in enumerate(CANONICAL_LEADS)
        ]
        (rc.hea.parent / "r.hea").write_text("\n".join(lines) + "\n")
    else:
        wfdb.wrsamp(
            "r",
            fs=100,
            units=["mV"] * 12,
            sig_name=list(CANONICAL_LEADS),
            d_signal=d.T.astype(np.int32),
            fmt=[fmt] * 12,
            adc_gain=[gain] * 12,
            baseline=[0] * 12,
            write_dir=str(rc.hea.parent),
        )
    rec = read_record(rc.hea.parent / "r")
    np.testing.assert_allclose(rec.signal, wfdb_reference(rc.hea.parent / "r"), atol=1e-6)
    np.testing.assert_allclose(rec.signal, d / gain, atol=1e-6)


@pytest.mark.parametrize("gain", ["1.0(0)/uV", "1000000(0)/V", "1000/mV", "1000(0)/mv"])
def test_units_are_converted_to_mv(copy_record, records_dir: Path, gain: str) -> None:
    rc = copy_record()
    for i in range(1, 13):
        rc.edit_field(i, 2, gain)
    mv = read_record(rc.hea).signal
    np.testing.assert_allclose(mv, read_record(records_dir / "00002_lr").signal, rtol=1e-6)
    np.testing.assert_allclose(mv, rc.digital() / 1000.0, rtol=1e-6)


def test_baseline_is_subtracted(copy_record) -> None:
    rc = copy_record()
    ref = read_record(rc.hea).signal
    rc.write_digital(rc.digital() + 500)
    for i in range(1, 13):
        rc.edit_field(i, 2, "1000.0(500)/mV")
    np.testing.assert_allclose(read_record(rc.hea).signal, ref, atol=1e-6)


def test_250hz_record(copy_record) -> None:
    rc = copy_record("00002_hr")
    rc.write_digital(rc.digital()[:, ::2])
    rc.edit_field(0, 2, "250")
    rec = read_record(rc.hea)
    assert rec.fs_hz == 250 and rec.signal.shape == (12, 2500)


def test_missing_length_is_inferred_with_warning(copy_record) -> None:
    rc = copy_record()
    rc.edit_field(0, 3, None)
    rec = read_record(rc.hea)
    assert rec.signal.shape == (12, 1000)
    assert any("inferred" in w for w in rec.warnings)


def test_checksum_mismatch_warns(copy_record) -> None:
    rc = copy_record()
    rc.edit_field(3, 6, "123")
    rec = read_record(rc.hea)
    assert any("checksum" in w and "II" in w for w in rec.warnings)


def test_oversized_signal_file_warns(copy_record) -> None:
    rc = copy_record()
    with rc.dat.open("ab") as f:
        f.write(b"\0" * 2400)
    rec = read_record(rc.hea)
    assert rec.signal.shape == (12, 1000)
    assert any("2400 bytes beyond" in w for w in rec.warnings)


# --- bad headers --------------------------------------------------------------------------------------


def test_missing_header_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(RecordNotFoundError, match="not found") as e:
        read_record(tmp_path / "nothing")
    assert isinstance(e.value, FileNotFoundError)


def test_missing_signal_file_is_not_found(copy_record) -> None:
    rc = copy_record()
    rc.dat.unlink()
    with pytest.raises(RecordNotFoundError, match="00002_lr.dat"):
        read_record(rc.hea)


def test_missing_sampling_rate(copy_record) -> None:
    rc = copy_record()
    rc.edit_field(0, 2, None)  # also drops the length
    with pytest.raises(HeaderError, match="no sampling rate.*250 Hz"):
        read_record(rc.hea)


@pytest.mark.parametrize("fs", ["0", "-100", "abc", "0.005", "1e-6", "2000000"])
def test_bad_sampling_rate(copy_record, fs: str) -> None:
    rc = copy_record()
    rc.edit_field(0, 2, fs)
    with pytest.raises(HeaderError, match="sampling rate") as e:
        read_record(rc.hea)
    assert str(rc.hea) in str(e.value)


def test_missing_gain(copy_record) -> None:
    rc = copy_record()
    rc.edit_field(5, 2, None)
    with pytest.raises(HeaderError, match="no ADC gain"):
        read_record(rc.hea)


@pytest.mark.parametrize("gain", ["0(0)/mV", "0", "x/mV", "-1000(0)/mV", "-1000"])
def test_zero_negative_or_malformed_gain(copy_record, gain: str) -> None:
    """A negative gain would invert the lead (sinus rhythm read as something else): refused, never
    applied or ignored."""
    rc = copy_record()
    rc.edit_field(2, 2, gain)
    with pytest.raises(HeaderError, match="gain"):
        read_record(rc.hea)


def test_non_voltage_units(copy_record) -> None:
    rc = copy_record()
    rc.edit_field(1, 2, "1000.0(0)/mmHg")
    with pytest.raises(HeaderError, match="mmHg"):
        read_record(rc.hea)


def test_signal_count_mismatch(copy_record) -> None:
    rc = copy_record()
    rc.edit_field(0, 1, "13")
    with pytest.raises(HeaderError, match="13 signals"):
        read_record(rc.hea)


def test_multi_segment_record_is_refused(copy_record) -> None:
    rc = copy_record()
    rc.edit_field(0, 0, "00002_lr/3")
    with pytest.raises(HeaderError, match="multi-segment"):
        read_record(rc.hea)


@pytest.mark.parametrize("fmt", ["310", "8", "516", "16x2"])
def test_unsupported_format(copy_record, fmt: str) -> None:
    rc = copy_record()
    for i in range(1, 13):
        rc.edit_field(i, 1, fmt)
    with pytest.raises(SignalFileError, match="not supported"):
        read_record(rc.hea)


# --- unsafe or inconsistent signal files ----------------------------------------------------------------


def _set_file_name(rc, name: str) -> None:
    for i in range(1, 13):
        rc.edit_field(i, 0, name)


def test_parent_dir_file_name_is_refused(copy_record) -> None:
    rc = copy_record(sub="a/b")
    (rc.hea.parent.parent / "00002_lr.dat").write_bytes(rc.dat.read_bytes())
    _set_file_name(rc, "../00002_lr.dat")
    with pytest.raises(SignalFileError, match=r"leaves the record folder"):
        read_record(rc.hea)


def test_absolute_file_name_is_refused(copy_record) -> None:
    rc = copy_record()
    _set_file_name(rc, str(rc.dat.resolve()))
    with pytest.raises(SignalFileError, match="absolute path"):
        read_record(rc.hea)


def test_symlink_out_of_folder_is_refused(copy_record, tmp_path: Path) -> None:
    rc = copy_record(sub="rec")
    outside = tmp_path / "outside.dat"
    outside.write_bytes(rc.dat.read_bytes())
    rc.dat.unlink()
    rc.dat.symlink_to(outside)
    with pytest.raises(SignalFileError, match="outside the record folder"):
        read_record(rc.hea)


def test_symlink_inside_folder_is_fine(copy_record) -> None:
    rc = copy_record()
    rc.dat.rename(rc.hea.parent / "real.dat")
    rc.dat.symlink_to(rc.hea.parent / "real.dat")
    assert read_record(rc.hea).signal.shape == (12, 1000)


def test_truncated_signal_file(copy_record) -> None:
    rc = copy_record()
    rc.dat.write_bytes(rc.dat.read_bytes()[:10001])
    with pytest.raises(SignalFileError, match=r"truncated: 10001 bytes.*need 24000 bytes"):
        read_record(rc.hea)


@pytest.mark.parametrize("n", ["4000000", "1000000000000"])
def test_huge_declared_length_fails_fast_without_allocating(copy_record, n: str) -> None:
    rc = copy_record()
    rc.edit_field(0, 3, n)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(SignalFileError, match="truncated|more than diagecg reads"):
            read_record(rc.hea)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 2.0
    assert peak < 5_000_000, f"allocated {peak} bytes before failing"


def test_challenge_mat_shape_mismatch(records_dir: Path, tmp_path: Path) -> None:
    for suffix in (".hea", ".mat"):
        (tmp_path / f"C00002{suffix}").write_bytes((records_dir / f"C00002{suffix}").read_bytes())
    val = scipy.io.loadmat(str(tmp_path / "C00002.mat"))["val"]
    scipy.io.savemat(tmp_path / "C00002.mat", {"val": val[:, :4000]}, format="5")
    with pytest.raises(SignalFileError, match=r"shape \(12, 4000\)"):
        read_record(tmp_path / "C00002")


# --- signal quality -------------------------------------------------------------------------------------


def test_invalid_samples_become_nan_and_are_rejected(copy_record) -> None:
    rc = copy_record()
    d = rc.digital()
    d[6, 100:120] = -32768  # WFDB's invalid-sample value of format 16, lead V1
    rc.write_digital(d)
    with pytest.raises(SignalQualityError, match="NaN/inf.*V1: 20"):
        read_record(rc.hea)


def test_nan_in_float_mat_is_rejected(records_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "C00002.hea").write_bytes((records_dir / "C00002.hea").read_bytes())
    val = scipy.io.loadmat(str(records_dir / "C00002.mat"))["val"].astype(np.float64)
    val[2, 50] = np.nan
    scipy.io.savemat(tmp_path / "C00002.mat", {"val": val}, format="5")
    with pytest.raises(SignalQualityError, match="NaN.*III: 1"):
        read_record(tmp_path / "C00002.hea")


def test_flat_lead_is_rejected(copy_record) -> None:
    rc = copy_record()
    d = rc.digital()
    d[4] = 12
    rc.write_digital(d)
    with pytest.raises(SignalQualityError, match="flat lead.*aVL"):
        read_record(rc.hea)


def test_saturated_lead_is_rejected(copy_record) -> None:
    rc = copy_record()
    d = rc.digital()
    lo, hi = np.percentile(d[1], [20, 80]).astype(int)
    d[1] = np.clip(d[1], lo, hi)  # 20% of the samples pinned at each rail
    rc.write_digital(d)
    with pytest.raises(SignalQualityError, match="saturated.*II"):
        read_record(rc.hea)


def test_microvolts_declared_as_millivolts(copy_record) -> None:
    rc = copy_record()
    for i in range(1, 13):
        rc.edit_field(i, 2, "1.0(0)/mV")  # uV samples declared as mV
    with pytest.raises(SignalQualityError, match="does not look like mV"):
        read_record(rc.hea)


def test_volts_declared_as_millivolts(copy_record) -> None:
    rc = copy_record()
    for i in range(1, 13):
        rc.edit_field(i, 2, "1000000.0(0)/mV")
    with pytest.raises(SignalQualityError, match="every lead is flat.*V given as mV"):
        read_record(rc.hea)


def test_too_short_record(copy_record) -> None:
    rc = copy_record()
    rc.write_digital(rc.digital()[:, :150])
    with pytest.raises(SignalQualityError, match=r"too short: 1\.500 s.*2 s"):
        read_record(rc.hea)


# --- leads ------------------------------------------------------------------------------------------------


def test_missing_lead(copy_record) -> None:
    rc = copy_record()
    rc.rename_lead("V6", "vz")  # a known extra: dropped, so V6 is missing
    with pytest.raises(LeadError, match="missing lead V6"):
        read_record(rc.hea)


def test_unknown_lead(copy_record) -> None:
    rc = copy_record()
    rc.rename_lead("V3", "RESP")
    with pytest.raises(LeadError, match="'RESP'"):
        read_record(rc.hea)


def test_duplicate_lead(copy_record) -> None:
    rc = copy_record()
    rc.rename_lead("V3", "v2")
    with pytest.raises(LeadError, match="duplicate lead V2"):
        read_record(rc.hea)


def test_leads_are_reordered(copy_record) -> None:
    rc = copy_record()
    ref = read_record(rc.hea).signal
    rc.rename_lead("I", "tmp")
    rc.rename_lead("V6", "lead I")
    rc.rename_lead("tmp", "C6")
    rec = read_record(rc.hea, quality=QualityConfig(require_ecg=False))
    np.testing.assert_array_equal(rec.signal[0], ref[11])
    np.testing.assert_array_equal(rec.signal[11], ref[0])
    with pytest.raises(SignalQualityError, match="break the relations"):  # V6 labelled as lead I
        read_record(rc.hea)


# --- header comments and arrays ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("comment", "field", "value"),
    [
        ("age: 81", "age_years", 81.0),
        ("Age: 56", "age_years", 56.0),
        ("Age: NaN", "age_years", None),
        ("sex: female", "sex", "female"),
        ("Sex: M", "sex", "male"),
        ("Sex: Unknown", "sex", None),
        ("height: 1.80 m", "height_cm", 180.0),
        ("Height: 172", "height_cm", 172.0),
        ("weight: 80 kg", "weight_kg", 80.0),
    ],
)
def test_patient_comments(comment: str, field: str, value: object) -> None:
    patient, dx, warnings = parse_patient_comments([comment, "ECG date: 01/10/1990"])
    assert getattr(patient, field) == value and dx == [] and warnings == []


@pytest.mark.parametrize("comment", ["age: 300", "sex: yes", "weight: heavy"])
def test_implausible_patient_comments_warn(comment: str) -> None:
    patient, _, warnings = parse_patient_comments([comment])
    assert patient.age_years is None and patient.sex is None and patient.weight_kg is None
    assert len(warnings) == 1 and comment.split(":")[0] in warnings[0]


def test_challenge_dx_codes() -> None:
    _, dx, _ = parse_patient_comments(["Dx: 426783006,164865005", "Rx: Unknown"])
    assert dx == ["426783006", "164865005"]


def test_header_parser_reads_counter_frequency_and_offsets() -> None:
    h = parse_wfdb_header("r 1 360/10(0) 20\nr.mat 16+24 200(-3)/uV 12 5 7 0 0 ECG lead I\n# age: 3\n")
    s = h.signals[0]
    assert (h.fs_hz, h.n_samples, s.byte_offset, s.gain, s.baseline, s.units) == (360, 20, 24, 200, -3, "uV")
    assert s.description == "ECG lead I" and h.comments == ("age: 3",)


def test_record_from_array(records_dir: Path) -> None:
    ref = read_record(records_dir / "00002_lr")
    order = list(range(11, -1, -1))
    names = [CANONICAL_LEADS[i].lower() for i in order]
    rec = record_from_array(ref.signal[order] * 1000, 100, names, units="uV")
    np.testing.assert_allclose(rec.signal, ref.signal, rtol=1e-6)
    with pytest.raises(RecordError, match="units"):
        record_from_array(ref.signal, 100, CANONICAL_LEADS, units="mmHg")
    with pytest.raises(RecordError, match="11 lead names"):
        record_from_array(ref.signal, 100, CANONICAL_LEADS[:11])


@pytest.mark.parametrize("fs", [1e-6, 0.005, 10.0, 2e6])
def test_rates_no_ecg_has_are_refused_before_resampling(fs: float) -> None:
    with pytest.raises(RecordError, match="not an ECG's"):
        record_from_array(np.zeros((12, 1000), np.float32), fs, CANONICAL_LEADS)


def test_challenge_mat_without_scipy_names_the_extra(
    records_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # `import scipy.io` raises ImportError
    with pytest.raises(SignalFileError, match=r"needs scipy: pip install 'diagecg\[mat\]'"):
        read_record(records_dir / "C00002.hea")


# --- one validation gate (issue 23): arrays and hand-built records are checked as files are ----------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda x: x.astype(np.complex64), "complex"),
        (lambda x: x > 0, "boolean"),
        (lambda x: x.astype(object), "Python objects"),
        (lambda x: x.astype(str), "text"),
        (lambda x: np.ma.masked_array(x, mask=x > 0.5), "masked samples"),
        (lambda x: x[:, :0], "shape"),
        (lambda x: None, "not NoneType"),
        (lambda x: "0 1 2", "not str"),
    ],
)
def test_record_from_array_refuses_what_is_not_real_numbers(records_dir: Path, make, message: str) -> None:
    x = read_record(records_dir / "00002_lr").signal
    with pytest.raises(RecordError, match=message):
        record_from_array(make(x), 100, CANONICAL_LEADS)


def test_record_from_array_takes_numpy_rates_and_unmasked_arrays(records_dir: Path) -> None:
    ref = read_record(records_dir / "00002_lr")
    for fs in (np.float32(100), np.int64(100), np.float64(100.0), 100):
        assert record_from_array(ref.signal, fs, CANONICAL_LEADS).fs_hz == 100.0
    unmasked = np.ma.masked_array(ref.signal, mask=np.zeros_like(ref.signal, dtype=bool))
    np.testing.assert_array_equal(record_from_array(unmasked, 100, CANONICAL_LEADS).signal, ref.signal)
    micro = np.round(ref.signal * 1000).astype(np.int16)
    as_ints = record_from_array(micro, 100, CANONICAL_LEADS, units="uV")
    np.testing.assert_allclose(as_ints.signal, ref.signal, atol=1e-3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fs_hz": True}, "bool"),
        ({"fs_hz": "100"}, "not a number of Hz"),
        ({"fs_hz": float("nan")}, "not a positive number"),
        ({"fs_hz": None}, "not a number of Hz"),
        ({"lead_names": None}, "lead_names must be a list of str, not NoneType"),
        ({"lead_names": "I II III"}, "lead_names must be a list of str, not str"),
        ({"lead_names": [1] * 12}, "lead_names must hold str only"),
        ({"units": None}, "units must be a str"),
        ({"patient": {"age_years": 50}}, "PatientInfo"),
        ({"diagnoses": None}, "diagnoses must be a list of str"),
    ],
)
def test_record_from_array_refuses_bad_arguments_with_a_record_error(
    records_dir: Path, kwargs: dict, message: str
) -> None:
    signal = read_record(records_dir / "00002_lr").signal
    args = {"signal": signal, "fs_hz": 100, "lead_names": CANONICAL_LEADS}
    with pytest.raises(RecordError, match=message):
        record_from_array(**{**args, **kwargs})


def test_record_from_array_caps_the_length_before_converting() -> None:
    huge = np.broadcast_to(np.float32(0), (12, 10_000_000))  # 120M values, not allocated
    tracemalloc.start()
    try:
        with pytest.raises(RecordError, match="more than diagecg reads"):
            record_from_array(huge, 500, CANONICAL_LEADS)
        assert tracemalloc.get_traced_memory()[1] < 10 << 20
    finally:
        tracemalloc.stop()


def test_scales_that_overflow_are_one_error_without_numpy_warnings(copy_record, records_dir: Path) -> None:
    import warnings

    rec = copy_record()
    rec.write_lines([rec.lines[0], *(ln.replace("1000.0(0)/mV", "1e-300(0)/mV") for ln in rec.lines[1:])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy RuntimeWarning would fail here
        with pytest.raises(SignalFileError, match="beyond float32"):
            read_record(rec.hea)
        with pytest.raises(SignalQualityError, match="infinite or beyond float32"):
            big = read_record(records_dir / "00002_lr").signal.astype(np.float64) * 1e305
            record_from_array(big, 100, CANONICAL_LEADS)


def test_a_nul_byte_in_a_signal_file_name_or_path_is_one_error(copy_record) -> None:
    rec = copy_record()
    rec.write_lines(
        [rec.lines[0], *(ln.replace("00002_lr.dat", "00002\x00_lr.dat", 1) for ln in rec.lines[1:])]
    )
    with pytest.raises(SignalFileError, match="NUL byte"):
        read_record(rec.hea)
    with pytest.raises(RecordError, match="NUL byte"):
        read_record("rec\x00.hea")


def test_a_hand_built_record_is_checked_like_a_file(records_dir: Path) -> None:
    from diagecg.io import check_record
    from diagecg.types import EcgRecord

    ref = read_record(records_dir / "00002_lr")
    assert check_record(ref) is ref  # read and unchanged: not checked again
    noise = np.random.default_rng(0).normal(0, 0.3, ref.signal.shape).astype(np.float32)
    with pytest.raises(SignalQualityError, match="does not look like a 12-lead ECG"):
        check_record(EcgRecord(signal=noise, fs_hz=100.0, lead_names=CANONICAL_LEADS))
    with pytest.raises(SignalQualityError, match="implausible amplitude"):
        check_record(EcgRecord(signal=ref.signal * 1e6, fs_hz=100.0, lead_names=CANONICAL_LEADS))
    with pytest.raises(RecordError, match="bool"):
        check_record(EcgRecord(signal=ref.signal, fs_hz=True, lead_names=CANONICAL_LEADS))  # type: ignore[arg-type]
    same = EcgRecord(signal=ref.signal.copy(), fs_hz=100.0, lead_names=CANONICAL_LEADS, record_id="x")
    checked = check_record(same)
    assert checked is not same and checked.record_id == "x" and check_record(checked) is checked
    checked.signal[0] = 0.0  # changed after its check: checked again (a flat lead I is refused)
    with pytest.raises(SignalQualityError, match="flat lead"):
        check_record(checked)
    # stricter thresholds than the record was checked with: checked again under them
    with pytest.raises(SignalQualityError, match="too short"):
        check_record(ref, QualityConfig(min_duration_s=20.0))


def test_a_mat_whose_val_disagrees_with_the_header_is_refused_before_inflating(
    records_dir: Path, tmp_path: Path
) -> None:
    """Issue 23: a 467 kB .mat inflating to 480 MB raised the server's memory to 0.8 GB."""
    (tmp_path / "C00002.hea").write_bytes((records_dir / "C00002.hea").read_bytes())
    scipy.io.savemat(
        tmp_path / "C00002.mat", {"val": np.zeros((12, 5_000_000), dtype=np.int16)}, do_compression=True
    )  # 120 MB of samples in ~120 kB
    assert (tmp_path / "C00002.mat").stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(SignalFileError, match=r"shape \(12, 5000000\)"):
            read_record(tmp_path / "C00002")
        assert tracemalloc.get_traced_memory()[1] < 20 << 20  # the samples were never inflated
    finally:
        tracemalloc.stop()

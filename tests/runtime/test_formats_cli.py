"""``diagecg infer`` / ``report`` on hospital formats: each real sample file is answered, a folder of
mixed formats is read by content, and a file of a known but unsupported format is one error line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from diagecg.cli import main
from diagecg.cli_options import ExitCode
from diagecg.runtime.pipeline import DiagEcgPipeline

FORMATS = Path(__file__).resolve().parents[1] / "fixtures" / "formats"
QUESTION = "Is the rhythm regular?"
# real 10 s, 12-lead (or 8 + derived) sample files of each format the readers were written for
REAL = {
    "dicom": FORMATS / "dicom" / "waveform_ecg.dcm",
    "hl7aecg": FORMATS / "hl7aecg" / "hl7_example_aecg.xml",
    "muse": FORMATS / "muse" / "muse-sinus.xml",
}


def _opts(bundle: Path) -> list[str]:
    return ["--bundle", str(bundle), "--device", "cpu", "--threads", "1"]


@pytest.mark.parametrize("fmt", sorted(REAL))
def test_each_real_sample_file_is_answered_like_its_record(
    fmt: str, tiny_bundle: Path, pipeline: DiagEcgPipeline
) -> None:
    if fmt == "dicom":
        pytest.importorskip("pydicom")
    path = REAL[fmt]
    result = CliRunner().invoke(main, ["infer", str(path), "-q", QUESTION, "--json", *_opts(tiny_bundle)])
    assert result.exit_code == ExitCode.OK, result.output
    line = json.loads(result.stdout)
    assert line["record"] == str(path) and line["answer"] == pipeline.answer(path, QUESTION).answer
    assert line["n_ecg_tokens"] > 0 and line["windows"]


def test_a_folder_of_mixed_formats_is_read_by_content(
    tiny_bundle: Path, record_paths: list[Path], tmp_path: Path
) -> None:
    pytest.importorskip("pydicom")
    shutil.copy(REAL["dicom"], tmp_path / "IM0001")  # no suffix, as DICOM files often come
    shutil.copy(REAL["muse"], tmp_path / "muse.xml")
    for suffix in (".hea", ".dat"):
        shutil.copy(record_paths[0].with_suffix(suffix), tmp_path / record_paths[0].with_suffix(suffix).name)
    (tmp_path / "notes.txt").write_text("not an ECG")
    scp_file = tmp_path / "cart.scp"
    scp_file.write_bytes(b"\x00" * 300)  # SCP-ECG: not sniffed in a folder; named alone
    result = CliRunner().invoke(main, ["report", str(tmp_path), *_opts(tiny_bundle)])
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    names = sorted(Path(x["record"]).name for x in lines)
    assert names == sorted(["IM0001", "muse.xml", record_paths[0].name])  # notes and the .scp skipped
    assert all("error" not in x for x in lines) and result.exit_code == ExitCode.OK
    single = CliRunner().invoke(main, ["report", str(scp_file), *_opts(tiny_bundle)])
    assert single.exit_code == ExitCode.FAILED and "SCP-ECG" in single.stderr
    assert "Traceback" not in single.output

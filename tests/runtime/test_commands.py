"""``diagecg infer`` / ``diagecg report``: in-process through click, and once in a torch-free subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from builders import cli_script_without, record_with_flat_leads
from click.testing import CliRunner

from diagecg.cli import main
from diagecg.cli_options import ExitCode
from diagecg.runtime import commands
from diagecg.runtime.pipeline import SCHEMA_VERSION, DiagEcgPipeline, answer_schema

QUESTION = "Is the rhythm regular?"
BLOCKED = ("torch", "transformers", "peft")
# Run the CLI with torch & co. unimportable (an import hook makes any import of them raise ImportError)
TORCH_FREE_CLI = cli_script_without(BLOCKED, "the runtime must not need it")


def _run_torch_free(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", TORCH_FREE_CLI, *args], capture_output=True, text=True, env=env, timeout=120
    )


def _opts(bundle: Path) -> list[str]:
    return ["--bundle", str(bundle), "--device", "cpu", "--threads", "1"]


def test_cli_without_torch_single_answer_and_batch_with_a_bad_record(
    tiny_bundle: Path, pipeline: DiagEcgPipeline, record_paths: list[Path], tmp_path: Path
) -> None:
    single = _run_torch_free("infer", str(record_paths[0]), "-q", QUESTION, *_opts(tiny_bundle))
    assert single.returncode == 0, single.stderr
    assert single.stdout.strip() == pipeline.answer(record_paths[0], QUESTION).answer

    listing = tmp_path / "records.txt"
    listing.write_text(f"# two good, one missing\n{record_paths[0]}\nnot-there.hea\n\n{record_paths[2]}\n")
    batch = _run_torch_free("report", f"@{listing}", *_opts(tiny_bundle))
    assert batch.returncode == 1, batch.stderr
    lines = [json.loads(line) for line in batch.stdout.splitlines()]
    assert [("error" in d) for d in lines] == [False, True, False]
    assert lines[1]["record"] == str(tmp_path / "not-there.hea")
    assert lines[1]["error_type"] == "RecordNotFoundError"
    assert set(lines[1]) == set(lines[0]) | {"error", "error_type"}  # an error line has every answer key
    assert lines[0]["task"] == "report" and lines[0]["answer"] == pipeline.report(record_paths[0]).answer
    assert "1 of 3 answers failed (3 records x 1 questions)" in batch.stderr


def test_several_questions_give_one_json_line_each_record_by_record(
    tiny_bundle: Path, pipeline: DiagEcgPipeline, record_paths: list[Path], tmp_path: Path
) -> None:
    questions = [QUESTION, "Does this ECG show sinus rhythm?"]
    args = ["infer", str(record_paths[0]), str(tmp_path / "gone.hea"), str(record_paths[1])]
    for q in questions:
        args += ["-q", q]
    result = CliRunner().invoke(main, [*args, *_opts(tiny_bundle)])
    assert result.exit_code == 1, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(d["record"], d["question"]) for d in lines] == [
        (str(p), q) for p in (record_paths[0], tmp_path / "gone.hea", record_paths[1]) for q in questions
    ]
    assert [("error" in d) for d in lines] == [False, False, True, True, False, False]
    for d, (p, q) in zip(
        [lines[0], lines[1], lines[4], lines[5]],
        [
            (record_paths[0], questions[0]),
            (record_paths[0], questions[1]),
            (record_paths[1], questions[0]),
            (record_paths[1], questions[1]),
        ],
        strict=True,
    ):
        assert d["answer"] == pipeline.answer(p, q).answer
    assert lines[1]["ecg_cached"] is True and lines[1]["n_reused_tokens"] > 63  # same ECG, next question
    assert "2 of 6 answers failed (3 records x 2 questions)" in result.stderr

    one_record = CliRunner().invoke(
        main, ["infer", str(record_paths[0]), "-q", questions[0], "-q", questions[1], *_opts(tiny_bundle)]
    )
    assert one_record.exit_code == 0 and len(one_record.stdout.splitlines()) == 2  # JSON lines


def test_folder_streams_one_json_line_per_record(tiny_bundle: Path, fixtures_dir: Path) -> None:
    folder = fixtures_dir / "records"
    result = CliRunner().invoke(main, ["infer", str(folder), "-q", QUESTION, *_opts(tiny_bundle)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["record_id"] for d in lines] == sorted(p.stem for p in folder.glob("*.hea"))
    assert all(d["schema_version"] == SCHEMA_VERSION and d["answer"] for d in lines)


def test_single_record_json(tiny_bundle: Path, record_paths: list[Path]) -> None:
    result = CliRunner().invoke(
        main, ["infer", str(record_paths[3]), "-q", QUESTION, "--json", "--quant", "f16", *_opts(tiny_bundle)]
    )
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    d = json.loads(line)
    assert d["record_id"] == "00002_hr" and d["bundle"]["quant"] == "f16"
    jsonschema.validate(d, answer_schema())


@pytest.mark.parametrize("question", ["what is <ecg_0042>?", "y" * 500])
def test_bad_question_exits_2_with_one_line(
    tiny_bundle: Path, record_paths: list[Path], question: str
) -> None:
    result = CliRunner().invoke(main, ["infer", str(record_paths[0]), "-q", question, *_opts(tiny_bundle)])
    assert result.exit_code == 2 and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr


def test_missing_default_bundle_is_explained(
    record_paths: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import diagecg.bundle.loader

    monkeypatch.setattr(diagecg.bundle.loader, "shipped_bundle_dir", lambda: tmp_path / "bundles" / "default")
    result = CliRunner().invoke(main, ["report", str(record_paths[0])])
    assert result.exit_code == 2
    assert "no bundle given and no default bundle shipped at" in result.stderr


def test_unreadable_record_exits_1_in_text_and_json_mode(
    tiny_bundle: Path, record_paths: list[Path], tmp_path: Path
) -> None:
    """The same failure gives the same exit code in every mode (ExitCode.FAILED)."""
    good = record_paths[0]
    truncated = tmp_path / good.name
    truncated.write_bytes(good.read_bytes())
    dat = good.with_suffix(".dat")
    (tmp_path / dat.name).write_bytes(dat.read_bytes()[:1000])
    for record in (tmp_path / "nope.hea", truncated):
        for mode in ([], ["--json"]):
            args = ["infer", str(record), "-q", QUESTION, *mode, *_opts(tiny_bundle)]
            result = CliRunner().invoke(main, args)
            assert result.exit_code == ExitCode.FAILED == 1, (record, mode, result.output)
            assert "Traceback" not in result.output
            text = result.stderr if not mode else json.loads(result.stdout)["error"]
            assert "not found" in text or "truncated" in text


def test_expand_records_rejects_empty_folder_and_list(tmp_path: Path) -> None:
    from diagecg.errors import InputError

    with pytest.raises(InputError, match="holds no ECG record"):
        commands.expand_records([str(tmp_path)])
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(InputError, match="names no record"):
        commands.expand_records([f"@{tmp_path / 'empty.txt'}"])


def test_unsupported_question_exits_3_and_supported_ones_carry_probabilities(
    catalogue_bundle: Path, record_paths: list[Path]
) -> None:
    plain = CliRunner().invoke(
        main, ["infer", str(record_paths[0]), "-q", "What is the heart rate?", *_opts(catalogue_bundle)]
    )
    assert plain.exit_code == ExitCode.UNSUPPORTED and plain.stdout == ""
    assert "not supported" in plain.stderr and "closest supported" in plain.stderr
    both = CliRunner().invoke(
        main,
        [
            "infer",
            str(record_paths[0]),
            "-q",
            "LBBB?",
            "-q",
            "What is the heart rate?",
            *_opts(catalogue_bundle),
        ],
    )
    assert both.exit_code == ExitCode.UNSUPPORTED, both.output
    first, second = (json.loads(line) for line in both.stdout.splitlines())
    assert first["question_supported"] is True
    assert set(first["option_probabilities"]) == {"yes", "no", "not sure"}
    assert first["confidence"] == first["option_probabilities"][first["answer"]]
    assert second["question_supported"] is False and second["answer"] == ""


def test_questions_command_lists_the_catalogue(catalogue_bundle: Path, tiny_bundle: Path) -> None:
    text = CliRunner().invoke(main, ["questions", "--bundle", str(catalogue_bundle)])
    assert text.exit_code == 0 and "Does this ECG show symptoms of ${attribute}?" in text.stdout
    assert "atrial fibrillation" in text.stdout
    as_json = CliRunner().invoke(main, ["questions", "--bundle", str(catalogue_bundle), "--json"])
    assert {t["template_id"] for t in json.loads(as_json.stdout)["templates"]} == set(range(1, 17))
    missing = CliRunner().invoke(main, ["questions", "--bundle", str(tiny_bundle)])
    assert missing.exit_code == 2 and "no question catalogue" in missing.stderr


def test_allow_degraded_flag(catalogue_bundle: Path, record_paths: list[Path], tmp_path: Path) -> None:
    path = record_with_flat_leads(record_paths[0], tmp_path, (6, 7))
    refused = CliRunner().invoke(main, ["infer", str(path), "-q", "AF?", *_opts(catalogue_bundle)])
    assert refused.exit_code == ExitCode.FAILED and "--allow-degraded" in refused.stderr
    allowed = CliRunner().invoke(
        main, ["infer", str(path), "-q", "AF?", "--allow-degraded", "--json", *_opts(catalogue_bundle)]
    )
    assert allowed.exit_code == 0, allowed.output
    assert any("degraded record" in w["message"] for w in json.loads(allowed.stdout)["warnings"])


def test_json_lines_stay_parseable_with_stderr_merged_and_quiet_drops_warnings(
    tiny_bundle: Path, record_paths: list[Path]
) -> None:
    args = [
        "infer",
        str(record_paths[0]),
        str(record_paths[1]),
        "-q",
        QUESTION,
        "--json",
        *_opts(tiny_bundle),
    ]
    # a host capturing `2>&1`: a real process (llama.cpp's native log goes to file descriptor 2)
    merged = subprocess.run(
        [sys.executable, "-m", "diagecg.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert merged.returncode == 0, merged.stdout
    assert [json.loads(line)["record_id"] for line in merged.stdout.splitlines()] == ["00002_lr", "00003_lr"]
    plain = CliRunner().invoke(main, ["infer", str(record_paths[4]), "-q", QUESTION, *_opts(tiny_bundle)])
    quiet = CliRunner().invoke(
        main, ["infer", str(record_paths[4]), "-q", QUESTION, "--quiet", *_opts(tiny_bundle)]
    )
    assert quiet.exit_code == plain.exit_code == 0 and quiet.stdout == plain.stdout
    assert "warning:" not in quiet.stderr


COMMANDS = [
    ["infer"],
    ["report"],
    ["questions"],
    ["plot"],
    ["train", "tokenizer"],
    ["train", "pretrain"],
    ["train", "instruct"],
    ["eval"],
    ["probe"],
    ["export"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_takes_verbose_and_quiet_and_lists_the_exit_codes(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "-v, --verbose" in text and "--quiet" in text
    assert "Exit codes: 0 done; 1 something failed" in text and "3 a question is not in" in text
    assert "-q, --quiet" not in text  # -q is the question wherever it appears (infer), never --quiet
    assert ("-q, --question" in text) == (command == ["infer"])


def test_load_message_only_with_verbose(tiny_bundle: Path, record_paths: list[Path]) -> None:
    args = [
        sys.executable,
        "-m",
        "diagecg.cli",
        "infer",
        str(record_paths[0]),
        "-q",
        QUESTION,
        *_opts(tiny_bundle),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    plain = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    loud = subprocess.run([*args, "-v"], capture_output=True, text=True, timeout=120, env=env)
    assert plain.returncode == loud.returncode == 0 and plain.stdout == loud.stdout
    assert "loaded bundle" not in plain.stderr and "loaded bundle" in loud.stderr


def test_threads_are_bounded_and_oversubscription_is_capped(
    tiny_bundle: Path, record_paths: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    from diagecg.runtime.device import MAX_THREADS, logical_cpus, resolve_threads

    absurd = CliRunner().invoke(
        main, ["infer", str(record_paths[0]), "-q", QUESTION, *_opts(tiny_bundle), "--threads", "100000"]
    )  # the last --threads counts
    assert absurd.exit_code == ExitCode.USAGE and "100000" in absurd.output
    with pytest.raises(ValueError, match=f"1..{MAX_THREADS}"):
        resolve_threads(MAX_THREADS + 1)
    with caplog.at_level("WARNING", logger="diagecg.runtime.device"):
        assert resolve_threads(logical_cpus() + 1) == logical_cpus()
        assert resolve_threads(MAX_THREADS) == min(MAX_THREADS, logical_cpus())
    assert f"threads={logical_cpus() + 1} capped at {logical_cpus()}" in caplog.text


def test_quant_the_bundle_lacks_is_refused_with_what_it_has(
    tiny_bundle: Path, record_paths: list[Path]
) -> None:
    result = CliRunner().invoke(
        main, ["infer", str(record_paths[0]), "-q", QUESTION, "--quant", "q6_k", *_opts(tiny_bundle)]
    )
    assert result.exit_code == ExitCode.USAGE and "no GGUF for quant 'q6_k'; available:" in result.stderr


@pytest.mark.parametrize(
    "stage, absent",
    [
        ("tokenizer", ["--base-model", "--init", "--load-in-4bit"]),
        ("instruct", ["--base-model"]),
        ("pretrain", []),
    ],
)
def test_train_stages_offer_only_their_config_fields_and_print_it_without_torch(
    stage: str, absent: list[str]
) -> None:
    for option in absent:
        result = CliRunner().invoke(main, ["train", stage, option, "x"])
        assert result.exit_code == ExitCode.USAGE and "No such option" in result.output
    printed = _run_torch_free("train", stage, "--print-config", "--set", "steps=7")
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout)["steps"] == 7
    bad = _run_torch_free("train", stage, "--set", "steps=0")
    assert bad.returncode == ExitCode.USAGE and bad.stderr.startswith("error: ") and "steps" in bad.stderr

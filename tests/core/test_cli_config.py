"""The config-driven commands (``train tokenizer|pretrain|instruct``, ``eval``, ``probe``, ``export``):
a bad config file or override is one ``error:`` line and exit code 2, before any stage runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from diagecg.cli import main
from diagecg.cli_options import ExitCode

TRAIN_STAGES = [["train", "tokenizer"], ["train", "pretrain"], ["train", "instruct"]]


def _invoke(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.stdout, result.stderr


def _one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.mark.parametrize(("value", "shown"), [("100", "'100'"), (100.5, "100.5")])
@pytest.mark.parametrize("command", TRAIN_STAGES, ids=" ".join)
def test_train_config_with_steps_of_the_wrong_json_type_exits_2_with_one_line(
    command: list[str], value: object, shown: str, tmp_path: Path
) -> None:
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"steps": value}))
    code, out, err = _invoke([*command, "--config", str(config)])
    line = _one_error_line(err)
    assert code == ExitCode.USAGE and out == ""
    assert f".steps={shown} is invalid: expected an integer" in line


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"steps": 10', "is not JSON"),
        ("[1, 2]", "expects a dict (a JSON object), got list"),
        (
            '{"augment": "no"}',
            "TokenizerTrainConfig.augment='no' is invalid: expected true or false, got str",
        ),
        ('{"encoder": {"groups": 0}}', "EncoderConfig.groups=0 is invalid: must be >= 1"),
    ],
)
def test_malformed_train_config_files_exit_2_with_one_line(text: str, match: str, tmp_path: Path) -> None:
    config = tmp_path / "bad.json"
    config.write_text(text)
    code, _, err = _invoke(["train", "tokenizer", "--config", str(config)])
    assert code == ExitCode.USAGE and match in _one_error_line(err)


def test_missing_config_file_and_bad_override_exit_2_with_one_line(tmp_path: Path) -> None:
    code, _, err = _invoke(["train", "tokenizer", "--config", str(tmp_path / "nope.json")])
    assert code == ExitCode.USAGE and "nope.json not found" in _one_error_line(err)
    code, _, err = _invoke(["train", "tokenizer", "--set", "steps=1.5"])
    assert code == ExitCode.USAGE and "--set steps='1.5': cannot parse" in _one_error_line(err)


def test_a_good_config_file_prints_back_with_overrides(tmp_path: Path) -> None:
    config = tmp_path / "good.json"
    config.write_text(json.dumps({"steps": 100, "lr": 1}))
    code, out, err = _invoke(
        ["train", "tokenizer", "--config", str(config), "--set", "batch_size=4", "--print-config"]
    )
    assert code == 0, err
    printed = json.loads(out)
    assert printed["steps"] == 100 and printed["lr"] == 1.0 and printed["batch_size"] == 4


# eval / probe / export: declared by the same factory as the train stages, --print-config included
CONFIG_COMMANDS = {
    "eval": (
        ["--checkpoint", "ck", "--data", "d", "--out", "r.json", "--set", "seed=3"],
        {"checkpoint_dir": "ck", "data_dir": "d", "out_file": "r.json", "seed": 3},
    ),
    "probe": (
        ["--tokenizer", "tok", "--eval-results", "e.json", "--out", "p.json", "--set", "seed=3"],
        {"tokenizer_dir": "tok", "eval_results": "e.json", "out_file": "p.json", "seed": 3},
    ),
    "export": (
        ["--checkpoint", "ck", "--out", "bundle", "--quant", "q8_0,f16", "--verify", "--set", "n_threads=2"],
        {
            "checkpoint_dir": "ck",
            "out_dir": "bundle",
            "quants": ["q8_0", "f16"],
            "verify_only": True,
            "n_threads": 2,
        },
    ),
}


@pytest.mark.parametrize("command", sorted(CONFIG_COMMANDS))
def test_eval_probe_export_print_their_resolved_config(command: str, tmp_path: Path) -> None:
    args, fields = CONFIG_COMMANDS[command]
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"progress": False}))
    code, out, err = _invoke([command, *args, "--config", str(config), "--print-config"])
    assert code == 0, err
    printed = json.loads(out)
    assert printed["progress"] is False and {k: printed[k] for k in fields} == fields


@pytest.mark.parametrize("command", ["eval", "probe", "export"])
def test_eval_probe_export_refuse_a_bad_config_with_one_line(command: str, tmp_path: Path) -> None:
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"progress": "yes"}))
    code, out, err = _invoke([command, "--config", str(config)])
    assert code == ExitCode.USAGE and out == ""
    assert "Config.progress='yes' is invalid: expected true or false, got str" in _one_error_line(err)


def test_a_config_the_stage_refuses_is_one_line_exit_1_not_a_traceback(tmp_path: Path) -> None:
    from diagecg.constants import CHECKPOINT_CONFIG, CHECKPOINT_STATE, CHECKPOINT_WEIGHTS

    for name in (CHECKPOINT_WEIGHTS, CHECKPOINT_CONFIG, CHECKPOINT_STATE):
        (tmp_path / name).write_text("{}")
    code, out, err = _invoke(["train", "tokenizer", "--out", str(tmp_path), "--set", "device=cpu"])
    assert code == ExitCode.FAILED and out == ""
    assert "already holds a checkpoint: pass --resume" in _one_error_line(err)

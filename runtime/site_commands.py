"""``diagecg validate`` and ``diagecg calibrate``: a hospital checks a bundle on its own labelled ECGs, and
re-calibrates it for its population, with the runtime alone (no torch). ``runtime.validate`` does the
work; this module is the command line.

``validate RECORDS... [--labels FILE] -o OUT`` writes into the folder OUT:

* ``validation.json``: every number (schema ``diagecg.validation``, documented in ``docs/validation.md``);
* ``records.jsonl`` and ``records.csv``: one row per record and finding, for audit (path, content
  sha256, label, p(present), the answer, the ablated p, the measurement; never signal data);
* ``report.html``: one self-contained page (tables, ROC curves, reliability diagrams, what was left out).

``calibrate RECORDS... [--labels FILE] -o NEW_BUNDLE`` writes a new bundle folder: the bundle's files,
its manifest with a new ``calibration`` section; the original bundle is never modified.

Exit codes: 0 done; 1 done, but some records failed (listed in the outputs); 2 nothing could run (bad
bundle, labels or options; no labelled record; nothing to calibrate).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from diagecg.cli_options import ExitCode, fail, verbosity_options
from diagecg.constants import DEFAULT_BUNDLE_DIR
from diagecg.errors import DiagEcgError, InputError
from diagecg.runtime.commands import expand_records, resolve_bundle
from diagecg.runtime.device import DEVICES, MAX_THREADS

_options = [
    click.argument("records", nargs=-1, required=True),
    click.option(
        "--labels",
        "labels_file",
        type=click.Path(dir_okay=False),
        help="Labels CSV: PTB-XL style (ecg_id/filename_lr + scp_codes) or record,finding,present "
        "(finding: SCP code, SNOMED CT id or name). Default: each record header's #Dx line "
        "(PhysioNet Challenge SNOMED CT codes or CPSC abbreviations).",
    ),
    click.option(
        "--bundle",
        type=click.Path(file_okay=False),
        help=f"Bundle folder (default: the shipped <diagecg>/{DEFAULT_BUNDLE_DIR}).",
    ),
    click.option("--quant", help="Which of the bundle's GGUF files (default: the bundle's own)."),
    click.option("--limit", type=click.IntRange(1), help="Use at most this many records (a seeded subset)."),
    click.option(
        "--seed",
        type=int,
        default=0,
        show_default=True,
        help="Seed of the subset, the ablation's record order and the bootstrap.",
    ),
    click.option(
        "--min-positives",
        type=click.IntRange(1),
        default=10,
        show_default=True,
        help="Findings with fewer positives are reported but left out of the macro means "
        "(calibrate: not calibrated).",
    ),
    click.option(
        "--finding",
        "only",
        multiple=True,
        metavar="CODE",
        help="Only this finding (SCP code or superclass, e.g. AFIB, CD); repeat for several. "
        "Default: every labelled finding the bundle can answer.",
    ),
    click.option("--threads", type=click.IntRange(1, MAX_THREADS), help="CPU threads."),
    click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True),
]


def _common(fn: Any) -> Any:
    for option in reversed(_options):
        fn = option(fn)
    return fn


def _setup(
    records: tuple[str, ...],
    labels_file: str | None,
    bundle: str | None,
    quant: str | None,
    threads: int | None,
    device: str,
    only: tuple[str, ...],
) -> tuple[list[Path], Any, Any]:
    """Records, labels and the pipeline, with ``--finding`` codes checked against its catalogue: every
    bad input fails here, before any record is read."""
    from diagecg.labels import read_labels
    from diagecg.runtime.pipeline import DiagEcgPipeline
    from diagecg.runtime.validate import asked_findings

    paths, _ = expand_records(records)
    labels = read_labels(labels_file) if labels_file else None
    pipe = DiagEcgPipeline.from_bundle(resolve_bundle(bundle), quant=quant, device=device, threads=threads)
    asked_findings(pipe, only or None)
    return paths, labels, pipe


def _command() -> str:
    return "diagecg " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "diagecg"


@click.command()
@_common
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for validation.json, records.jsonl, records.csv and report.html (created).",
)
@click.option(
    "--bootstrap",
    type=click.IntRange(0),
    default=1000,
    show_default=True,
    help="Bootstrap draws of the AUC intervals (0: none).",
)
@click.option(
    "--ablation/--no-ablation",
    default=True,
    show_default=True,
    help="Also answer each question with another record's ECG (the ECG-ablated model).",
)
@verbosity_options()
def validate(
    records: tuple[str, ...],
    labels_file: str | None,
    bundle: str | None,
    quant: str | None,
    limit: int | None,
    seed: int,
    min_positives: int,
    only: tuple[str, ...],
    threads: int | None,
    device: str,
    out_dir: str,
    bootstrap: int,
    ablation: bool,
    quiet: bool,
) -> None:
    """Validate a bundle on your own labelled ECG records (no torch): per finding AUC with 95% intervals,
    sensitivity, specificity, PPV, NPV and balanced accuracy at the bundle's decision rule, calibration
    error, beside the ECG-ablated model and the finding's defining measurement."""
    from diagecg.runtime.validate import collect, validation_result, write_rows, write_rows_csv
    from diagecg.runtime.validation_report import render_html

    out = Path(out_dir)
    try:
        if out.exists() and not out.is_dir():
            raise InputError(f"-o {out} is a file: give a folder")
        paths, labels, pipe = _setup(records, labels_file, bundle, quant, threads, device, only)
    except (DiagEcgError, ValueError, OSError) as e:
        fail(e, ExitCode.USAGE)
        return
    got = collect(
        pipe, paths, labels, limit=limit, seed=seed, ablation=ablation, progress=not quiet, only=only or None
    )
    if not got.rows:
        fail(
            InputError(
                f"no labelled record could be answered ({len(got.failed)} failed, "
                f"{len(got.unlabelled)} without labels)"
            ),
            ExitCode.USAGE,
        )
        return
    result = validation_result(
        pipe, got, labels, min_positives=min_positives, n_bootstrap=bootstrap, seed=seed, command=_command()
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "validation.json").write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
    write_rows(got.rows, out / "records.jsonl")
    write_rows_csv(got.rows, out / "records.csv")
    (out / "report.html").write_text(render_html(result, got.rows), encoding="utf-8")
    click.echo("\n".join(summary_lines(result)))
    click.echo(f"written: {out / 'validation.json'}, {out / 'report.html'}, records.jsonl, records.csv")
    if got.failed:
        sys.exit(int(ExitCode.FAILED))


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The plain-text table ``validate`` prints."""
    rec = result["records"]
    lines = [
        f"{rec['answered']} of {rec['given']} records answered ({len(rec['failed'])} failed, "
        f"{len(rec['unlabelled'])} unlabelled), {rec['n_questions']} questions, "
        f"{rec['records_per_minute']} records/min",
        f"{'finding':<40} {'n':>5} {'pos':>4} {'AUC':>6} {'95% CI':>13} {'ablated':>7} {'measure':>7} "
        f"{'sens':>5} {'spec':>5} {'PPV':>5} {'NPV':>5} {'ECE':>5}",
    ]

    def f(x: Any, k: int = 3) -> str:
        return "-" if x is None else f"{x:.{k}f}"

    for _code, v in sorted(result["findings"].items(), key=lambda kv: -kv[1]["n_pos"]):
        ci = v["auc_ci95"] or [None, None]
        lines.append(
            f"{v['finding'][:40]:<40} {v['n']:>5} {v['n_pos']:>4} {f(v['auc']):>6} "
            f"{(f(ci[0], 2) + '-' + f(ci[1], 2)):>13} {f(v['ablated_auc']):>7} "
            f"{f((v['ruler'] or {}).get('auc')):>7} {f(v['sensitivity'], 2):>5} "
            f"{f(v['specificity'], 2):>5} {f(v['ppv'], 2):>5} {f(v['npv'], 2):>5} {f(v['ece']):>5}"
        )
    m = result["macro"]
    if m:
        lines.append(
            f"macro over {m['n_findings']} findings with >= {m['min_positives']} positives: AUC "
            f"{f(m['auc'])} (ablated {f(m['ablated_auc'])}, measurement {f(m['ruler_auc'])}), "
            f"balanced accuracy {f(m['balanced_accuracy'])}, ECE {f(m['ece'])}"
        )
    return lines


@click.command()
@_common
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="The new bundle folder (must not exist, or be empty).",
)
@click.option(
    "--rule",
    default="balanced",
    show_default=True,
    help="How each finding's yes threshold is chosen: 'balanced' (best balanced accuracy) or "
    "'sensitivity:T' (the most specific threshold with sensitivity >= T, e.g. "
    "sensitivity:0.9).",
)
@click.option(
    "--folds",
    "k_folds",
    type=click.IntRange(2, 20),
    default=5,
    show_default=True,
    help="Cross-validation folds (over records) of the before/after numbers.",
)
@verbosity_options()
def calibrate(
    records: tuple[str, ...],
    labels_file: str | None,
    bundle: str | None,
    quant: str | None,
    limit: int | None,
    seed: int,
    min_positives: int,
    only: tuple[str, ...],
    threads: int | None,
    device: str,
    out_dir: str,
    rule: str,
    k_folds: int,
    quiet: bool,
) -> None:
    """Fit, per finding, a calibration of p(present) and a yes threshold on your own labelled records, and
    write them into a NEW bundle folder (the original is never modified); prints cross-validated
    before/after numbers."""
    from diagecg.calibration import parse_rule
    from diagecg.runtime.validate import collect, fit_site_calibration, write_calibrated_bundle

    try:
        parse_rule(rule)
        paths, labels, pipe = _setup(records, labels_file, bundle, quant, threads, device, only)
        out = Path(out_dir)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise InputError(f"{out} exists and is not an empty folder: the new bundle needs a new folder")
    except (DiagEcgError, ValueError, OSError) as e:
        fail(e, ExitCode.USAGE)
        return
    old = pipe.calibration
    pipe.calibration = {}  # the model's own probabilities are what a calibration maps
    got = collect(
        pipe, paths, labels, limit=limit, seed=seed, ablation=False, progress=not quiet, only=only or None
    )
    fitted, report = fit_site_calibration(
        got.rows, old, rule=rule, min_positives=min_positives, k_folds=k_folds, seed=seed
    )
    source = labels.source if labels is not None else "WFDB #Dx headers"
    try:
        written = write_calibrated_bundle(pipe.bundle.root, out, fitted, report, got.rows, source)
    except DiagEcgError as e:
        fail(e, ExitCode.USAGE)
        return
    click.echo(
        f"{len(got.rows)} questions on {got.n_records} records ({len(got.failed)} failed); rule "
        f"{rule}, {k_folds}-fold cross-validated (before: the bundle's rule; after: the new one)"
    )
    click.echo(
        f"{'finding':<40} {'pos':>4} {'AUC before/after':>17} {'ECE before/after':>17} "
        f"{'bal. acc. before/after':>23}"
    )
    for v in report["findings"].values():
        b, a = v["before"], v["after"]
        click.echo(
            f"{v['finding'][:40]:<40} {v['n_pos']:>4} {b['auc']:>8.3f}/{a['auc']:<8.3f} "
            f"{b['ece']:>8.3f}/{a['ece']:<8.3f} {b['balanced_accuracy']:>11.3f}/"
            f"{a['balanced_accuracy']:<11.3f}"
        )
    for v in report["refused"].values():
        click.echo(f"not calibrated: {v['finding']}: {v['why']}")
    click.echo(f"new bundle: {written}")
    if got.failed:
        sys.exit(int(ExitCode.FAILED))

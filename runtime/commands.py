"""``diagecg infer`` and ``diagecg report``: the runtime's command line (torch-free).

RECORD arguments may be a record (a WFDB ``.hea``, or a ``.mat``/``.dat`` signal file with its header
beside it; a DICOM, HL7 aECG, GE MUSE XML or EDF file: ``diagecg.formats``), a folder (every record
below it, recursively, sorted: ``diagecg.formats.find_records``), or ``@list.txt`` (one record
path per line; blank lines and ``#`` comments skipped; relative paths are taken from the list
file's folder).

``infer`` takes ``-q`` once or several times: every record is read once and asked each question
in turn (later questions reuse its ECG codes and the KV cells of the shared prompt prefix).

Output: a single record and a single question without ``--json`` print the answer on one line: just
the answer when the question was the catalogue's own wording, else the answer and, in brackets, what
the model was asked and answered and how sure it is (``yes  (as "no" to "Does this ECG show symptoms
of atrial fibrillation?"; p = 0.60)`` for "Is AF absent?"); ``--show-probability`` always adds the
probability (for a report or query, each statement's). Warnings go to stderr as ``warning [CODE]:
text``. With
``--json``, or several records (or a folder/list) or questions, each answer gives one JSON line on
stdout as it finishes, record by record and in question order (``Answer.to_dict()``, schema in
``diagecg.runtime.pipeline``; a failed one gives the same envelope with ``error`` and
``error_type``), with a progress bar on stderr when stderr is a terminal (``--quiet``: answers and
errors only, no warnings).

``--plot PATH`` also draws each answered record as a printed ECG with its answers and analysed
windows (``diagecg.runtime.plots``: a file for one record, a folder of ``<record_id>.png`` for
several); PATH is checked before the bundle loads, and a picture that cannot be drawn is an
``error:`` line on stderr and exit code 1 (its answers are still printed).

Exit codes (``diagecg.cli_options``; the same in plain-text and ``--json`` mode): 0 all answered;
1 some failed (their error lines say why; the others were answered); 2 nothing could run (bad bundle,
bad question, no records, a ``--plot`` PATH that cannot be written or no matplotlib); 3 nothing
failed but a question is not supported by the bundle's question catalogue (``question_supported:
false``, no answer given; ``diagecg questions`` lists what is supported).

``diagecg questions`` prints the bundle's question catalogue (``--json``: the manifest's object).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from diagecg.cli_options import EXIT_CODES_HELP, ExitCode, fail, patient_options, verbosity_options
from diagecg.constants import DEFAULT_BUNDLE_DIR
from diagecg.errors import BundleError, DiagEcgError, InputError
from diagecg.features import summary_line
from diagecg.formats import find_records
from diagecg.polarity import invert_answer
from diagecg.questions import SEMANTICS, QuestionType, normalize_question
from diagecg.runtime.device import DEVICES, MAX_THREADS
from diagecg.types import PatientInfo

if TYPE_CHECKING:
    from diagecg.runtime.pipeline import Answer, DiagEcgPipeline
    from diagecg.runtime.plots import AnswerPlots

# Fail at import when the runtime extra is missing, so `diagecg` shows why (see cli.py), without
# paying for the heavy imports on every `diagecg` call.
for _module in ("onnxruntime", "llama_cpp", "tokenizers"):
    if importlib.util.find_spec(_module) is None:
        raise ImportError(f"No module named {_module!r}")

LIST_PREFIX = "@"


def resolve_bundle(bundle: str | None) -> Path:
    """``bundle`` if given, else the shipped default bundle (``diagecg.bundle.default_bundle``).

    Raises:
        BundleError: no bundle given and none shipped.
    """
    from diagecg.bundle import default_bundle

    return Path(bundle) if bundle else default_bundle()


def _read_list(path: Path) -> list[Path]:
    if not path.is_file():
        raise InputError(f"record list {path} not found")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def expand_records(args: tuple[str, ...] | list[str]) -> tuple[list[Path], bool]:
    """Record paths named by RECORD arguments, and whether any came from a folder or a list.

    A path that does not exist is kept: reading it fails with a per-record error.

    Raises:
        InputError: an empty folder, a missing or empty list file, an empty argument, or no arguments.
    """
    records: list[Path] = []
    expanded = False
    for arg in args:
        if not arg.strip():  # Path("") is the current folder: it would be scanned recursively
            raise InputError("an empty RECORD argument ('') names no record")
        if "\x00" in arg:
            raise InputError(f"RECORD argument {arg!r} contains a NUL byte")
        if arg.startswith(LIST_PREFIX):
            listed = _read_list(Path(arg[len(LIST_PREFIX) :]))
            if not listed:
                raise InputError(f"record list {arg[len(LIST_PREFIX) :]} names no record")
            records.extend(listed)
            expanded = True
        elif Path(arg).is_dir():
            found = find_records(arg)
            if not found:
                raise InputError(
                    f"folder {arg} holds no ECG record (WFDB .hea, DICOM, HL7 aECG, MUSE XML, EDF)"
                )
            records.extend(found)
            expanded = True
        else:
            records.append(Path(arg))
    if not records:
        raise InputError("no RECORD given")
    return records, expanded


def _progress(results: Iterator[Any], total: int, quiet: bool) -> Iterator[Any]:
    """A progress bar on stderr, only when stderr is a terminal (a host capturing ``2>&1`` gets
    clean JSON lines) and not ``--quiet``."""
    if quiet or not sys.stderr.isatty():
        yield from results
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="answer", file=sys.stderr, dynamic_ncols=True) as bar:
        for r in results:
            bar.update(1)
            yield r


def plain_answer(ans: Answer, show_probability: bool = False) -> str:
    """The one line ``infer``/``report`` print for an answer (module docstring)."""
    mq = ans.matched_question
    if ans.task == "report" or (mq is not None and mq["question_type"] == QuestionType.QUERY):
        if ans.task == "report" and not ans.answer:
            return "(no statement the model's own answers confirm; the warnings say why)"
        if not show_probability or not ans.statements:
            return ans.answer
        parts = [
            s["text"] + (f" (p {s['probability']:.2f})" if s["probability"] is not None else "")
            for s in ans.statements
        ]
        if ans.task != "report":
            return "; ".join(parts)
        return ". ".join(p[0].upper() + p[1:] for p in parts) + "."
    p = f"p = {ans.confidence:.2f}" if ans.confidence is not None else None
    reworded = mq is not None and (
        mq["polarity"] == "negated"
        or mq["scope"] != "same"
        or bool(mq["spelling"])
        or normalize_question(ans.question) != normalize_question(mq["canonical"])
    )
    if mq is not None and reworded:
        model = invert_answer(ans.answer) if mq["polarity"] == "negated" else ans.answer
        said = [f'as "{model}" to "{mq["canonical"]}"']
        if mq["scope"] != "same":
            said.append(f"a {mq['scope']} finding than asked")
        return f"{ans.answer}  ({'; '.join([*said, *([p] if p else [])])})"
    return f"{ans.answer}  ({p})" if show_probability and p else ans.answer


def _answer_all(
    records_args: tuple[str, ...],
    questions: tuple[str, ...] | None,
    *,
    bundle: str | None,
    quant: str | None,
    as_json: bool,
    threads: int | None,
    device: str,
    verify_hashes: bool,
    age: float | None,
    sex: str | None,
    height_cm: float | None,
    weight_kg: float | None,
    allow_degraded: bool,
    plot_path: str | None,
    quiet: bool,
    measure: bool = False,
    show_probability: bool = False,
    output: str | None = None,
    audit_log: str | None = None,
) -> None:
    from diagecg.runtime.outputs import AnswerFile
    from diagecg.runtime.pipeline import Answer, DiagEcgPipeline

    patient = PatientInfo(age_years=age, sex=sex, height_cm=height_cm, weight_kg=weight_kg)

    out_file = None
    try:
        records, expanded = expand_records(records_args)
        plots = None
        if plot_path is not None:  # checked before the bundle loads: a bad PATH fails at once
            from diagecg.runtime.plots import AnswerPlots

            plots = AnswerPlots(plot_path, several=expanded or len(records) > 1)
        if output is not None:
            out_file = AnswerFile(output)  # checked (suffix, no overwrite) before the bundle loads
        pipe = DiagEcgPipeline.from_bundle(
            resolve_bundle(bundle),
            quant=quant,
            device=device,
            threads=threads,
            verify_hashes=verify_hashes,
            allow_degraded=allow_degraded,
            measure=measure,
            audit_log=audit_log,
        )
        for question in questions or ():
            pipe.check_question(question)
    except (DiagEcgError, ValueError, FileNotFoundError, ImportError) as e:
        if out_file is not None:
            out_file.close()
            out_file.path.unlink(missing_ok=True)
        fail(e, ExitCode.USAGE)
        return
    n_questions = len(questions) if questions is not None else 1
    stream = out_file is not None or as_json or expanded or len(records) > 1 or n_questions > 1
    if not stream:
        try:
            ans = (
                pipe.answer(records[0], questions[0], patient=patient)
                if questions is not None
                else pipe.report(records[0], patient=patient)
            )
        except DiagEcgError as e:  # the record failed, as its error line in --json mode: exit code 1
            fail(e, ExitCode.FAILED)
            return
        for w in [] if quiet else ans.warnings:
            click.echo(f"warning [{w.code}]: {w.message}", err=True)
        if ans.question_supported is not False:
            click.echo(plain_answer(ans, show_probability))
        if ans.measurements is not None:
            click.echo(summary_line(ans.measurements))
        if plots is not None and _plot([ans], plots, pipe) is None:
            sys.exit(int(ExitCode.FAILED))
        if ans.question_supported is False:
            sys.exit(int(ExitCode.UNSUPPORTED))
        return
    results = (
        pipe.answer_batch(records, list(questions), patient=patient)
        if questions is not None
        else pipe.report_batch(records, patient=patient)
    )
    n_failed = n_unsupported = n_unplotted = 0
    total = len(records) * n_questions
    pending: list[Answer | dict[str, Any]] = []  # the current record's lines, emitted once it is drawn

    def emit(lines: list[Answer | dict[str, Any]]) -> None:
        nonlocal n_unplotted
        answered = [x for x in lines if isinstance(x, Answer)]
        picture = None
        if plots is not None and answered:
            picture = _plot(answered, plots, pipe)
            n_unplotted += picture is None
        for x in lines:
            line = x.to_dict() if isinstance(x, Answer) else x
            if plots is not None:
                line["plot"] = str(picture) if picture is not None and isinstance(x, Answer) else None
            if out_file is not None:
                out_file.write(line, plot=line.get("plot"))
            else:
                click.echo(json.dumps(line, ensure_ascii=False))

    try:
        for result in _progress(results, total, quiet):
            if plots is None:  # each line as it finishes
                emit([result])
            else:  # a record's lines once its picture is drawn (they name it)
                if pending and _source(pending[0]) != _source(result):
                    emit(pending)
                    pending = []
                pending.append(result)
            if isinstance(result, Answer):
                n_unsupported += result.question_supported is False
            else:
                n_failed += 1
        if pending:
            emit(pending)
    finally:
        if out_file is not None:
            out_file.close()
    if out_file is not None:
        answered = total - n_failed - n_unsupported
        click.echo(
            f"{out_file.n_written} lines written to {out_file.path}: {answered} answered, {n_failed} "
            f"failed, {n_unsupported} not supported",
            err=True,
        )
    if n_failed:
        click.echo(
            f"{n_failed} of {total} answers failed ({len(records)} records x {n_questions} questions)",
            err=True,
        )
    for first, renamed in plots.renamed if plots is not None else []:
        click.echo(
            f"note: --plot: {first.stem} names several records; also drawn as {renamed.name} (the "
            f"'plot' field of each JSON line says which picture is whose)",
            err=True,
        )
    if n_unplotted:
        click.echo(
            f"--plot: {n_unplotted} answered records could not be drawn (their error lines say why)", err=True
        )
    if n_failed or n_unplotted:
        sys.exit(int(ExitCode.FAILED))
    if n_unsupported:
        click.echo(
            f"{n_unsupported} of {total} questions are not supported by the bundle: no answer given "
            f"(`diagecg questions` lists the supported ones)",
            err=True,
        )
        sys.exit(int(ExitCode.UNSUPPORTED))


def _source(x: Any) -> str:
    return x.record if hasattr(x, "record") and not isinstance(x, dict) else x["record"]


def _plot(answers: list[Answer], plots: AnswerPlots, pipe: DiagEcgPipeline) -> Path | None:
    """Draw one record's answers (``--plot``) with the filters the model saw: the picture's path, or None
    after one ``error:`` line on stderr."""
    try:
        return plots.write(answers, preprocess=pipe.bundle.preprocess, quality=pipe.quality)
    except (DiagEcgError, OSError, ValueError) as e:
        click.echo(f"error: --plot {answers[0].record}: {' '.join(str(e).split())}", err=True)
        return None


_common_options: list[Callable[[Any], Any]] = [
    click.argument("records", nargs=-1, required=True, metavar="RECORD..."),
    click.option(
        "--bundle",
        type=click.Path(file_okay=False),
        help=f"Bundle folder (default: the shipped <diagecg>/{DEFAULT_BUNDLE_DIR}).",
    ),
    click.option(
        "--quant",
        help="Which of the bundle's GGUF files, e.g. q8_0 or q4_k_m (default: the "
        "bundle's own; another it lacks is refused with the list it has).",
    ),
    click.option("--json", "as_json", is_flag=True, help="One JSON line per record (always so for several)."),
    click.option(
        "--threads",
        type=click.IntRange(1, MAX_THREADS),
        help="CPU threads (default: half the CPUs, at most 8; more than the CPUs warns).",
    ),
    click.option(
        "--device",
        type=click.Choice(DEVICES),
        default="auto",
        show_default=True,
        help="auto = CUDA where the installed engines support it; cuda = fail unless both do.",
    ),
    click.option(
        "--verify-hashes/--no-verify-hashes",
        default=True,
        show_default=True,
        help="Check every bundle file's sha256 at load (sizes are always checked).",
    ),
    click.option(
        "--allow-degraded",
        is_flag=True,
        help="Answer records with some flat leads (e.g. missing precordial electrodes), with a "
        "warning naming them and what can still be trusted; default: refuse them.",
    ),
    click.option(
        "--plot",
        "plot_path",
        metavar="PATH",
        help="Also draw each answered record as a printed ECG with its answers and analysed "
        "windows (pip install 'diagecg[plot]'): one record -> the file PATH (.png, .pdf or "
        ".svg); several -> the folder PATH (created if missing), one <record_id>.png each. "
        "'{record_id}' in PATH is replaced by the record's id.",
    ),
    click.option(
        "-o",
        "--output",
        metavar="FILE",
        help="Write every answer to FILE instead of stdout: .jsonl (one JSON line each) or .csv "
        "(one row per record and question, probabilities and warning codes flattened); an "
        "existing FILE is refused. A progress bar and the final count go to stderr.",
    ),
    click.option(
        "--audit-log",
        metavar="FILE",
        help="Append one JSON line per answer and failure to FILE (UTC time, request id, record "
        "SHA-256, question, answer, probabilities, warning codes, bundle hash, latency; never "
        "signal data). Rotated at 100 MB.",
    ),
    patient_options(),  # patient features for the structured prompt; each overrides the header's
    click.option(
        "--show-probability",
        is_flag=True,
        help="Plain text: add the probability of the answer (a report or query: of each statement). "
        "A question asked in other words than the catalogue's always shows it.",
    ),
]


def _with_common_options(fn: Any) -> Any:
    for option in reversed(_common_options):
        fn = option(fn)
    return fn


@click.command(epilog=EXIT_CODES_HELP)
@_with_common_options
@verbosity_options()
@click.option(
    "-q",
    "--question",
    "questions",
    required=True,
    multiple=True,
    help="The question, in plain text; repeat it to ask several (each record is read once).",
)
def infer(records: tuple[str, ...], questions: tuple[str, ...], quiet: bool, **options: Any) -> None:
    """Answer questions about ECG records with the offline runtime (no torch)."""
    _answer_all(records, questions, quiet=quiet, **options)


@click.command(epilog=EXIT_CODES_HELP)
@_with_common_options
@verbosity_options()
@click.option(
    "--measure/--no-measure",
    default=True,
    show_default=True,
    help="Add heart rate, RR irregularity, PR, QRS, QT/QTc and the frontal axis to each report "
    "(numpy measurements of the signal: the numbers the model reads).",
)
@click.option(
    "-q",
    "--question",
    "question",
    hidden=True,
    expose_value=True,
    help="Not taken: a report answers no question.",
)
def report(records: tuple[str, ...], quiet: bool, question: str | None, **options: Any) -> None:
    """Write the report of ECG records with the offline runtime (no torch)."""
    if question is not None:  # -q is the question everywhere: never --quiet, never a RECORD
        raise click.UsageError(
            f"report takes no question; ask it with: diagecg infer RECORD -q {question!r} "
            f"(--quiet is errors only)"
        )
    _answer_all(records, None, quiet=quiet, **options)


@click.command(epilog=EXIT_CODES_HELP)
@verbosity_options()
@click.option(
    "--bundle",
    type=click.Path(file_okay=False),
    help=f"Bundle folder (default: the shipped <diagecg>/{DEFAULT_BUNDLE_DIR}).",
)
@click.option("--json", "as_json", is_flag=True, help="The catalogue as JSON (the manifest's object).")
def questions(bundle: str | None, as_json: bool) -> None:
    """List the questions the bundle's model was trained to answer, with their answer options."""
    from diagecg.bundle import load_bundle

    try:
        loaded = load_bundle(resolve_bundle(bundle), verify_hashes=False, check_models=False)
    except DiagEcgError as e:
        fail(e, ExitCode.USAGE)
        return
    catalogue = loaded.questions
    if catalogue is None:
        fail(
            BundleError(
                f"{loaded.root} has no question catalogue (exported before diagecg had them): "
                f"every question goes to the model as typed"
            ),
            ExitCode.USAGE,
        )
        return
    from diagecg.reliability import MIN_AUC, MIN_POSITIVES, ReliabilityTable

    table = ReliabilityTable.from_manifest(loaded.manifest)
    rows = [table.finding(f) for f in ("normal ecg", *catalogue.findings)]
    if as_json:
        floor = {"min_positives": MIN_POSITIVES, "min_auc": MIN_AUC}
        click.echo(
            json.dumps(
                {
                    **catalogue.to_dict(),
                    "semantics": {str(k): v for k, v in SEMANTICS.items()},
                    "reliability": {"source": table.source, "floor": floor, "findings": rows},
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    click.echo("Questions this model was trained to answer ([template id] type: wording -> answer options).")
    click.echo(
        "Other wordings, abbreviations (AF, LBBB, 1st degree AVB, LVH, PVC...), synonyms and small "
        "misspellings are read as these; a negated question ('Is there no AF?', 'Can you exclude "
        "AF?') is answered as asked (the answer inverted); a general name is answered as the nearest "
        "finding with a warning (heart block -> conduction disturbance); anything else is refused."
    )
    click.echo(
        "Answers about one record never contradict each other: a class (myocardial infarction, ST/T "
        "change, conduction disturbance, hypertrophy) is yes when one of its findings is, and of two "
        "findings no ECG has together (normal ECG and an infarction, sinus bradycardia and "
        "tachycardia, AF and sinus rhythm...) the less probable is answered no.\n"
    )
    for line, entry in zip(
        catalogue.describe(), sorted(catalogue.entries.values(), key=lambda e: e.template_id), strict=True
    ):
        click.echo(line)
        if entry.template_id in SEMANTICS:
            click.echo(f"    means: {SEMANTICS[entry.template_id]}")
        if entry.attributes:
            click.echo(f"    attributes: {', '.join(entry.attributes)}")
        for example in entry.examples[:3]:
            click.echo(f"    e.g. {example}")
    click.echo(
        f"\nHow far each finding can be trusted (held out: {table.source}). Floor: {MIN_POSITIVES} "
        f"positive records and AUC {MIN_AUC}; below it, or never validated, answers carry a warning "
        f"code. PPV/NPV at the evaluation's prevalence."
    )
    click.echo(
        f"  {'finding':<44} {'status':<13} {'pos':>4}  {'AUC (95% CI)':<19} {'sens':>5} {'spec':>5} "
        f"{'PPV':>5} {'NPV':>5}  warnings"
    )

    def num(v: float | None) -> str:
        return "  -  " if v is None else f"{v:5.2f}"

    unvalidated = []
    for r in rows:
        if r["status"] == "not_validated":
            unvalidated.append(r["finding"])
            continue
        ci = r["auc_ci95"]
        auc = "-" if r["auc"] is None else f"{r['auc']:.2f}" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else "")
        click.echo(
            f"  {r['finding'][:44]:<44} {r['status']:<13} {r['n_positives']:>4}  {auc:<19} "
            f"{num(r['sensitivity'])} {num(r['specificity'])} {num(r['ppv'])} {num(r['npv'])}  "
            f"{' '.join(r['warnings'])}"
        )
    if unvalidated:
        click.echo(
            f"  not validated (FINDING_NOT_VALIDATED), {len(unvalidated)} findings: {', '.join(unvalidated)}"
        )

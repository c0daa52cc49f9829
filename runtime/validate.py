"""``diagecg validate`` and ``diagecg calibrate``: a site checks, and re-calibrates, a bundle on its own
labelled ECGs (torch-free: the runtime's own pipeline, any record format).

**Collecting answers** (:func:`collect`). Every record is read once (a record that cannot be read is
counted with its one-line reason and the run goes on); its labels come from ``--labels`` or from its
header's ``#Dx`` line (``diagecg.labels``). For every finding the record is labelled for and the
bundle's question catalogue can ask about, the catalogue's yes/no question is answered as the product
answers it (``DiagEcgPipeline.answer``: whole record, the bundle's calibration and consistency rule);
p(present) is read from the answer's option probabilities (``runtime.answering.presence``). Beside
it, on the same question:

* the **ECG-ablated** model: the record's prompt and patient with the ECG codes of the record before it
  (records in a seeded order, the first takes the last's: a derangement), scored raw and mapped by the
  same calibration;
* the **measurement alone** where the finding has a defining measurement (``diagecg.criteria``,
  computed as the runtime computes it: ``preprocess.record_measurements``).

**Scoring** (:func:`score`) is ``diagecg.scoring.score_findings``, the function ``diagecg eval`` and
``bench/ecg_dependence.py`` use, plus PPV/NPV with Wilson intervals, the expected calibration error
and reliability table per finding, the ablated AUC and the ruler; macro means over the findings with
at least ``min_positives`` positives.

**Calibrating** (:func:`fit_site_calibration`): per finding with enough positives and negatives, a
Platt map of the model's own p(present) (answers collected with the bundle's calibration off) and a
threshold by the chosen rule, fitted on all records and checked by k-fold cross-validation over
records: before (the bundle's current rule) and after, AUC, ECE and balanced accuracy with bootstrap
intervals. :func:`write_calibrated_bundle` copies the bundle to a new folder with the new
``calibration`` section in its manifest (the original is never modified) and verifies it loads.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import json
import math
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from diagecg import __version__
from diagecg.bundle import load_bundle
from diagecg.calibration import calibration_identity, fit_calibration, parse_rule, platt
from diagecg.constants import MANIFEST_NAME
from diagecg.constants import ManifestKey as K
from diagecg.criteria import criterion_for, criterion_score
from diagecg.errors import DiagEcgError, InputError
from diagecg.labels import SiteLabels, labels_from_diagnoses
from diagecg.preprocess import record_measurements
from diagecg.questions import MatchedQuestion
from diagecg.reliability import wilson
from diagecg.runtime.answering import NORMAL_NAME, presence
from diagecg.runtime.outputs import record_sha256
from diagecg.runtime.pipeline import DiagEcgPipeline
from diagecg.runtime.record_input import as_record
from diagecg.scoring import calibration, roc_auc, score_findings
from diagecg.statements import find_statement

__all__ = [
    "VALIDATION_SCHEMA_VERSION",
    "Collected",
    "Row",
    "collect",
    "fit_site_calibration",
    "score",
    "write_calibrated_bundle",
    "write_rows",
    "write_rows_csv",
]

VALIDATION_SCHEMA_VERSION = 1
_OPTIONS = ("yes", "no")  # how a row's p(present) is handed to score_findings: 1 - p(no) = p(present)


@dataclasses.dataclass(frozen=True)
class Row:
    """One record's answer to one finding's question."""

    record: str  # the record's path as given
    record_id: str
    sha256: str  # of the record's files (the header and its signal file, or the one file)
    code: str  # the finding's code (SCP-ECG / PTB-XL superclass)
    finding: str  # the catalogue's name of it
    truth: bool
    p_present: float  # the answer's probability of presence (calibrated when the bundle is)
    said_present: bool  # the answer (after the bundle's decision rule and consistency rule)
    p_raw: float  # the model's own p(present) of the same window, before any calibration
    p_ablated: float | None  # another record's ECG codes
    measurement: float | None  # the defining measurement's score (diagecg.criteria), if any


@dataclasses.dataclass
class Collected:
    """What :func:`collect` gathered: the rows, and what was left out and why."""

    rows: list[Row]
    n_given: int
    failed: list[dict[str, str]]  # {record, reason}
    unlabelled: list[str]  # records without labels
    not_answerable: Counter[str]  # labelled finding codes the bundle cannot ask about -> records
    wall_s: float

    @property
    def n_records(self) -> int:
        return len({r.record for r in self.rows})


def catalogue_findings(pipe: DiagEcgPipeline) -> dict[str, tuple[str, MatchedQuestion]]:
    """Finding code -> (catalogue name, its yes/no question), for every finding the bundle can ask."""
    catalogue = pipe.bundle.questions
    if catalogue is None:
        raise InputError("the bundle has no question catalogue: nothing to validate")
    out: dict[str, tuple[str, MatchedQuestion]] = {}
    for name in [NORMAL_NAME, *catalogue.findings]:
        st = find_statement("normal ECG" if name == NORMAL_NAME else name)
        question = catalogue.finding_question(name)
        if st is not None and question is not None:
            out.setdefault(st.code, (name, question))
    return out


def asked_findings(
    pipe: DiagEcgPipeline, only: Collection[str] | None = None
) -> dict[str, tuple[str, MatchedQuestion]]:
    """:func:`catalogue_findings`, restricted to ``only`` (None: all).

    Raises:
        InputError: a code in ``only`` the bundle's catalogue cannot ask about (the message lists them).
    """
    findings = catalogue_findings(pipe)
    if only is None:
        return findings
    unknown = sorted(set(only) - set(findings))
    if unknown:
        raise InputError(
            f"findings {unknown} are not in the bundle's question catalogue (it asks about "
            f"{', '.join(sorted(findings))})"
        )
    return {c: v for c, v in findings.items() if c in only}


def _said_present(question: MatchedQuestion, answer: str) -> bool:
    # a record-level question about a statement ("is this a normal ECG?") says it present by "yes" alone
    return answer == "yes" if question.template.statement is not None else answer != "no"


def _calibrated(pipe: DiagEcgPipeline, finding: str, p: float) -> float:
    cal = pipe.calibration.get(finding)
    return p if cal is None else float(platt(np.asarray(p), float(cal["a"]), float(cal["b"])))


def _order(paths: Sequence[Path], limit: int | None, seed: int) -> list[Path]:
    order = list(paths)
    random.Random(f"validate-{seed}").shuffle(order)
    return order[:limit] if limit is not None else order


def collect(
    pipe: DiagEcgPipeline,
    paths: Sequence[Path],
    labels: SiteLabels | None,
    *,
    limit: int | None = None,
    seed: int = 0,
    ablation: bool = True,
    progress: bool = True,
    only: Collection[str] | None = None,
) -> Collected:
    """Answer every labelled finding of every record (module docstring).

    Args:
        pipe: the runtime pipeline of the bundle under test.
        paths: the records (any format the runtime reads).
        labels: the site's labels; None = each record's ``#Dx`` header line.
        limit: answer at most this many records (a seeded subset).
        seed: the subset's and the ablation's order.
        ablation: also score each question with another record's ECG codes.
        progress: a progress bar on stderr.
        only: ask only about these finding codes (None: every labelled one the bundle can answer).
    """
    findings = asked_findings(pipe, only)
    order = _order(paths, limit, seed)
    rows: list[Row] = []
    failed: list[dict[str, str]] = []
    unlabelled: list[str] = []
    not_answerable: Counter[str] = Counter()
    previous: Any = None  # ECG codes of the last record answered (the next one's ablation)
    first: tuple[Any, list[tuple[int, str, MatchedQuestion]]] | None = None
    t0 = time.perf_counter()
    bar = tqdm(order, desc="validate", unit="rec", disable=not progress, file=sys.stderr)
    for path in bar:
        try:
            rec = as_record(path, pipe.quality)
            lab = (
                labels.of(rec.record_id or path.stem)
                if labels is not None
                else (labels_from_diagnoses(rec.diagnoses) if rec.diagnoses else None)
            )
            if not lab:
                unlabelled.append(str(path))
                continue
            not_answerable.update(c for c in lab if c not in findings)
            asked = [(c, *findings[c]) for c in sorted(lab) if c in findings]
            sha = record_sha256(Path(path))
            features = record_measurements(rec, pipe.bundle.preprocess)
            codes = pipe.ecg_codes(rec)
            start = len(rows)
            for code, name, question in asked:
                ans = pipe.answer(rec, question.canonical)
                probs = ans.option_probabilities or {}
                raw = pipe.option_probabilities(rec, question.canonical, question.options)
                crit = criterion_for(code)
                rows.append(
                    Row(
                        record=str(path),
                        record_id=rec.record_id,
                        sha256=sha,
                        code=code,
                        finding=name,
                        truth=bool(lab[code]),
                        p_present=presence(question, probs),
                        said_present=_said_present(question, ans.answer),
                        p_raw=presence(question, raw),
                        p_ablated=None,
                        measurement=None if crit is None else float(criterion_score(crit, features[None])[0]),
                    )
                )
            if ablation and asked:
                if previous is None:  # the first record takes the last one's codes, at the end
                    first = (rec, [(start + k, name, q) for k, (_, name, q) in enumerate(asked)])
                else:
                    _ablate(pipe, rows, rec, previous, start, asked)
                previous = codes
        except DiagEcgError as e:  # counted with its reason; the run goes on
            failed.append({"record": str(path), "reason": str(e).splitlines()[0]})
        except OSError as e:
            failed.append({"record": str(path), "reason": f"{type(e).__name__}: {e}"})
        pipe.clear_caches()  # memory stays flat: nothing of a record is kept but its rows
    if first is not None and previous is not None:
        rec, items = first
        for k, name, question in items:
            raw = pipe.option_probabilities(rec, question.canonical, question.options, ecg_codes=previous)
            rows[k] = dataclasses.replace(rows[k], p_ablated=_calibrated(pipe, name, presence(question, raw)))
    return Collected(
        rows=rows,
        n_given=len(order),
        failed=failed,
        unlabelled=unlabelled,
        not_answerable=not_answerable,
        wall_s=time.perf_counter() - t0,
    )


def _ablate(
    pipe: DiagEcgPipeline,
    rows: list[Row],
    rec: Any,
    other_codes: Any,
    start: int,
    asked: list[tuple[str, str, MatchedQuestion]],
) -> None:
    for k, (_, name, question) in enumerate(asked):
        raw = pipe.option_probabilities(rec, question.canonical, question.options, ecg_codes=other_codes)
        rows[start + k] = dataclasses.replace(
            rows[start + k], p_ablated=_calibrated(pipe, name, presence(question, raw))
        )


@dataclasses.dataclass(frozen=True)
class _Verify:
    """What ``score_findings`` reads of a verify question: the record, the answer, the finding."""

    ecg_id: int
    answers: tuple[str, ...]
    attributes: tuple[str, ...]


def _samples(rows: Sequence[Row]) -> tuple[list[Any], list[str], list[np.ndarray]]:
    ids = {r: k for k, r in enumerate(dict.fromkeys(r.record for r in rows))}
    samples = [_Verify(ids[r.record], ("yes",) if r.truth else ("no",), (r.finding,)) for r in rows]
    return samples, [r.code for r in rows], [np.array([r.p_present, 1.0 - r.p_present]) for r in rows]


def _round(x: float | None, k: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), k)


def score(
    rows: Sequence[Row], *, min_positives: int = 10, n_bootstrap: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Per-finding and macro metrics of collected rows (module docstring). Findings without both
    positives and negatives are listed under ``one_class``."""
    by_code: dict[str, list[Row]] = {}
    for r in rows:
        by_code.setdefault(r.code, []).append(r)
    scored = [r for r in rows if 0 < sum(x.truth for x in by_code[r.code]) < len(by_code[r.code])]
    one_class = {
        c: {"n": len(v), "n_pos": sum(x.truth for x in v)}
        for c, v in sorted(by_code.items())
        if not 0 < sum(x.truth for x in v) < len(v)
    }
    if not scored:
        return {"findings": {}, "one_class": one_class, "macro": {}, "calibration": None}
    samples, codes, probs = _samples(scored)
    base = score_findings(
        samples,
        codes,
        probs,
        [_OPTIONS] * len(scored),
        min_positives,
        n_bootstrap=n_bootstrap,
        seed=seed,
        calls=[r.said_present for r in scored],
    )
    out: dict[str, Any] = {}
    for code, row in base["per_finding"].items():
        rs = [r for r in scored if r.code == code]
        truth = np.array([r.truth for r in rs])
        called = np.array([r.said_present for r in rs])
        p = np.array([r.p_present for r in rs])
        tp, fp = int((called & truth).sum()), int((called & ~truth).sum())
        tn, fn = int((~called & ~truth).sum()), int((~called & truth).sum())
        ablated = [r.p_ablated for r in rs]
        measured = [r.measurement for r in rs]
        rel = calibration(truth, np.clip(p, 0.0, 1.0))
        out[code] = {
            "finding": rs[0].finding,
            "n": row["n"],
            "n_pos": row["n_pos"],
            "auc": _round(row["auc"]),
            "auc_ci95": [_round(v) for v in row["auc_ci95"] or []] or None,
            "sensitivity": _round(row["sensitivity"]),
            "sensitivity_ci95": wilson(tp, tp + fn),
            "specificity": _round(row["specificity"]),
            "specificity_ci95": wilson(tn, tn + fp),
            "ppv": _round(tp / (tp + fp)) if tp + fp else None,
            "ppv_ci95": wilson(tp, tp + fp),
            "npv": _round(tn / (tn + fn)) if tn + fn else None,
            "npv_ci95": wilson(tn, tn + fn),
            "balanced_accuracy": _round(row["balanced_accuracy"]),
            "ece": _round(rel["ece"]),
            "reliability": rel["bins"],
            "ablated_auc": _round(roc_auc(truth, np.array(ablated, float)))
            if all(a is not None for a in ablated)
            else None,
            "ruler": None
            if measured[0] is None
            else {
                "measurement": criterion_for(code).feature,  # type: ignore[union-attr]
                "auc": _round(roc_auc(truth, np.array(measured, float))),
            },
            "counts": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        }
    main = [c for c, v in out.items() if v["n_pos"] >= min_positives]

    def macro(key: str, sub: str | None = None) -> float | None:
        got = [(out[c][key] or {}).get(sub) if sub else out[c][key] for c in main]
        vals = [float(v) for v in got if v is not None]
        return _round(float(np.mean(vals))) if vals else None

    return {
        "findings": out,
        "one_class": one_class,
        "calibration": {
            "presence_ece": _round(base["calibration"]["presence"]["ece"]),
            "bins": base["calibration"]["presence"]["bins"],
        },
        "macro": {
            "min_positives": min_positives,
            "n_findings": len(main),
            "findings": main,
            "auc": macro("auc"),
            "ablated_auc": macro("ablated_auc"),
            "ruler_auc": macro("ruler", "auc"),
            "balanced_accuracy": macro("balanced_accuracy"),
            "sensitivity": macro("sensitivity"),
            "specificity": macro("specificity"),
            "ece": macro("ece"),
        },
    }


def bundle_identity(pipe: DiagEcgPipeline) -> dict[str, Any]:
    """The bundle under test, as every answer names it (path, versions, hashes, calibration)."""
    return dict(pipe.bundle_info)


def validation_result(
    pipe: DiagEcgPipeline,
    got: Collected,
    labels: SiteLabels | None,
    *,
    min_positives: int,
    n_bootstrap: int,
    seed: int,
    command: str,
) -> dict[str, Any]:
    """The JSON ``diagecg validate`` writes (``docs/validation.md`` documents every key)."""
    scored = score(got.rows, min_positives=min_positives, n_bootstrap=n_bootstrap, seed=seed)
    minutes = got.wall_s / 60
    return {
        "schema": "diagecg.validation",
        "schema_version": VALIDATION_SCHEMA_VERSION,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "diagecg_version": __version__,
        "command": command,
        "bundle": bundle_identity(pipe),
        "labels": {
            "source": labels.source if labels is not None else "WFDB #Dx headers",
            "unmapped_codes": dict(sorted(labels.unmapped.items())) if labels is not None else {},
        },
        "records": {
            "given": got.n_given,
            "answered": got.n_records,
            "failed": got.failed,
            "unlabelled": got.unlabelled,
            "n_questions": len(got.rows),
            "records_per_minute": round(got.n_records / minutes, 1) if minutes > 0 else None,
            "wall_s": round(got.wall_s, 1),
        },
        "not_answerable": dict(sorted(got.not_answerable.items())),
        **scored,
    }


def write_rows(rows: Sequence[Row], path: Path) -> None:
    """Per-record results for audit: one JSON line per (record, finding)."""
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(dataclasses.asdict(r), sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------- calibrate
def _folds(rows: Sequence[Row], k: int, seed: int) -> dict[str, int]:
    records = sorted({r.record for r in rows})
    random.Random(f"calibrate-{seed}").shuffle(records)
    return {rec: i % k for i, rec in enumerate(records)}


def _old_rule(old: dict[str, Any] | None, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's current (probability, decision) of raw p(present): its calibration, or the model's own
    most probable answer (p >= 0.5)."""
    if old is None:
        return p, p >= 0.5
    q = platt(p, float(old["a"]), float(old["b"]))
    return q, q >= float(old["threshold"])


def _metrics(truth: np.ndarray, p: np.ndarray, q: np.ndarray, called: np.ndarray) -> dict[str, float | None]:
    """AUC (of the model's own p: a calibration is a monotone map of it, so AUC is the same before and
    after; the pooled cross-validated scores would mix the folds' maps), ECE of ``q`` and balanced
    accuracy of ``called``."""
    sens = called[truth].mean() if truth.any() else math.nan
    spec = (~called[~truth]).mean() if (~truth).any() else math.nan
    return {
        "auc": roc_auc(truth, p),
        "ece": calibration(truth, np.clip(q, 0, 1))["ece"],
        "balanced_accuracy": float((sens + spec) / 2),
    }


def _interval(draws: list[float]) -> list[float | None]:
    v = [d for d in draws if not math.isnan(d)]
    if not v:
        return [None, None]
    return [_round(float(np.percentile(v, 2.5))), _round(float(np.percentile(v, 97.5)))]


def fit_site_calibration(
    rows: Sequence[Row],
    old: dict[str, dict[str, Any]],
    *,
    rule: str = "balanced",
    min_positives: int = 10,
    k_folds: int = 5,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per-finding calibration of the model's own p(present) (``Row.p_raw``) and its cross-validated
    effect (module docstring).

    Returns:
        (finding name -> ``{"code", "a", "b", "threshold", "n", "n_pos"}``, report: per finding the
        before/after numbers with intervals, and the findings refused with how many positives they have
        and need).
    """
    parse_rule(rule)
    fold_of = _folds(rows, k_folds, seed)
    by_code: dict[str, list[Row]] = {}
    for r in rows:
        by_code.setdefault(r.code, []).append(r)
    fitted: dict[str, dict[str, Any]] = {}
    report: dict[str, Any] = {
        "rule": rule,
        "k_folds": k_folds,
        "min_positives": min_positives,
        "findings": {},
        "refused": {},
    }
    rng = np.random.default_rng(seed)
    for code, rs in sorted(by_code.items()):
        name = rs[0].finding
        truth = np.array([r.truth for r in rs])
        n_pos, n_neg = int(truth.sum()), int((~truth).sum())
        if min(n_pos, n_neg) < min_positives:
            report["refused"][code] = {
                "finding": name,
                "n_pos": n_pos,
                "n_neg": n_neg,
                "needed": min_positives,
                "why": f"{min(n_pos, n_neg)} "
                f"{'positives' if n_pos < n_neg else 'negatives'}; at least "
                f"{min_positives} of each are needed",
            }
            continue
        p = np.array([r.p_raw for r in rs])
        cal = fit_calibration([code] * len(rs), p.tolist(), truth.tolist(), min_positives=1, rule=rule)[code]
        fitted[name] = {"code": code, **cal}
        # cross-validated: each fold calibrated by a map fitted on the other folds
        folds = np.array([fold_of[r.record] for r in rs])
        q_after, call_after = np.zeros(len(rs)), np.zeros(len(rs), bool)
        for f in range(k_folds):
            test, train = folds == f, folds != f
            if not test.any():
                continue
            if min(truth[train].sum(), (~truth[train]).sum()) < 1:  # nothing to fit: the fold keeps raw
                q_after[test], call_after[test] = p[test], p[test] >= 0.5
                continue
            fold_cal = fit_calibration(
                [code] * int(train.sum()),
                p[train].tolist(),
                truth[train].tolist(),
                min_positives=1,
                rule=rule,
            )[code]
            q_after[test] = platt(p[test], fold_cal["a"], fold_cal["b"])
            call_after[test] = q_after[test] >= fold_cal["threshold"]
        q_before, call_before = _old_rule(old.get(name), p)
        before, after = _metrics(truth, p, q_before, call_before), _metrics(truth, p, q_after, call_after)
        boot: dict[str, list[float]] = {f"{w}_{m}": [] for w in ("before", "after") for m in before}
        for _ in range(n_bootstrap):
            k = rng.integers(0, len(rs), len(rs))
            if truth[k].all() or not truth[k].any():
                continue
            for w, (q, decided) in (("before", (q_before, call_before)), ("after", (q_after, call_after))):
                for m, v in _metrics(truth[k], p[k], q[k], decided[k]).items():
                    boot[f"{w}_{m}"].append(float(v) if v is not None else math.nan)
        report["findings"][code] = {
            "finding": name,
            "n": len(rs),
            "n_pos": n_pos,
            "threshold": cal["threshold"],
            "before": {m: _round(v) for m, v in before.items()},
            "after": {m: _round(v) for m, v in after.items()},
            "before_ci95": {m: _interval(boot[f"before_{m}"]) for m in before},
            "after_ci95": {m: _interval(boot[f"after_{m}"]) for m in after},
        }
    return fitted, report


def labels_sha256(rows: Sequence[Row]) -> str:
    """A hash of what the calibration was fitted on: every (record content, finding, label)."""
    h = hashlib.sha256()
    for key in sorted(f"{r.sha256}\t{r.code}\t{int(r.truth)}" for r in rows):
        h.update(key.encode() + b"\n")
    return h.hexdigest()


def write_calibrated_bundle(
    source: Path,
    out: Path,
    fitted: dict[str, dict[str, Any]],
    report: dict[str, Any],
    rows: Sequence[Row],
    labels_source: str,
) -> Path:
    """Copy ``source`` to the new folder ``out`` with ``fitted`` as its manifest's calibration, and check it
    loads with every hash verified. ``source`` is never modified.

    Raises:
        InputError: ``out`` exists and is not empty, or lies inside ``source``; nothing was calibrated.
    """
    source, out = Path(source).resolve(), Path(out).resolve()
    if out == source or source in out.parents:
        raise InputError(f"the new bundle {out} must not be the bundle or lie inside it ({source})")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder: the new bundle needs a new folder")
    if not fitted:
        why = "; ".join(f"{c}: {v['why']}" for c, v in report["refused"].items()) or "no findings"
        raise InputError(
            f"no finding had enough positives and negatives to calibrate ({why}): no bundle written"
        )
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp)
    manifest_path = tmp / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    previous = calibration_identity(manifest.get(K.CALIBRATION))
    manifest[K.CALIBRATION] = {
        "method": "platt",
        "rule": report["rule"],
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "tool": f"diagecg {__version__} calibrate",
        "fitted_on": {
            "source": f"site labels ({Path(labels_source).name})",
            "n_records": len({r.record for r in rows}),
            "n_questions": len(rows),
            "sha256": labels_sha256(rows),
        },
        "previous": previous,
        "cross_validation": report,
        "findings": fitted,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    load_bundle(tmp, verify_hashes=True, check_models=False)
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out


def write_rows_csv(rows: Sequence[Row], path: Path) -> None:
    """The per-record results as CSV (one row per record and finding)."""
    cols = [f.name for f in dataclasses.fields(Row)]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if getattr(r, c) is None else getattr(r, c) for c in cols])

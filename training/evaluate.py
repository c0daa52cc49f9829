"""Held-out evaluation of an instruction-tuned checkpoint: ECG-QA exact match and reports.

What is measured, on PTB-XL folds the checkpoint never trained on (fold 10 by default: ``ptbxl/``'s fold
10 and, with ``ptbxl_full``, the test split of ``ptbxl_full/``, about 2,100 records; ``max_records``
draws a seeded subset stratified by :func:`eval_record_strata`). Statements are asked only of records
whose statements are labelled; superclass and NORM questions of every record. The AF-enriched subset of
``ptbxl_full`` is corrected for with ``PtbxlDataset.statement_weights``: in the majority baselines'
counts and in every per-finding number (AUC, rates, calibration). Per-finding AUCs and their macro means
come with 95% bootstrap intervals (``n_bootstrap`` draws, records resampled).

* **QA exact match** (ECG-QA, Oh et al. 2023, arXiv 2306.15681): the generated answer, read by
  :func:`diagecg.answers.normalize_answer`, must equal the reference answer set. Questions are the
  template questions of :func:`~diagecg.datasets.ecgqa.generate_questions` (SCP statements) and,
  with ``include_ecgqa_noise``, ECG-QA's released noise questions on the same records. Each
  wording is scored separately: ``"template"`` (the template sentences, seen in training) and
  ``"paraphrase"`` (held-out wordings never used in training; ECG-QA's own paraphrases for the
  noise questions), so the gap between them measures robustness to unseen wording.
* **Majority baselines**, beside every model number: the most frequent answer set on the
  training folds per template (``majority_template``) and per template + attributes
  (``majority_question``, a stronger baseline: it knows e.g. that "atrial fibrillation?" is
  mostly "no"). A model that does not beat them has not learned to read the ECG.
* **ECG ablation**, beside every model number (``ablation``): the same model with each record's
  ECG tokens replaced by another record's of the same fold (``training.findings``). The gap between
  the model and its ablation is how much the answers depend on the ECG.
* **Per finding** (``training.findings``): every record is asked the verify question of each
  superclass, each statement with ``finding_min_positives`` positives and the tracked rhythm and
  conduction findings; AUC of p(present) read from the answer logits, sensitivity, specificity and
  balanced accuracy of the most probable answer, for the model and its ablation, per wording.
* **Report generation** (DiagECG / HeartLLM, arXiv 2508.15338): BLEU-1..4, METEOR, ROUGE-1/2/L of
  the generated report against ``report_text(entry, scp_table, "en")``.

Decoding is greedy and batched (left padding); the prompt is the one the checkpoint was trained
with (``diagecg.prompts.encode_prompt`` with its stored ``PromptConfig``), so results are
deterministic for a given checkpoint and config.

Results JSON (``schema_version`` 1; written to ``out_file`` when set)::

    schema_version  int
    checkpoint_dir  str; data_dir str (the PTB-XL folder used)
    folds, train_folds  [int]   evaluated folds; folds the baselines count answers on
    config          EvalConfig.to_dict()
    checkpoint      {"stage", "method", "preset", "training_folds": {"<stage>.<key>": [int]}}
                    (folds recorded by the checkpoint's stages, see checkpoint_training_folds)
    device          str;  wall_s float
    n_records       int   test records encoded; n_records_skipped int (failed validation)
    n_prompts_over_context  int   prompts + max_new_tokens longer than the runtime's n_ctx (the
                          runtime would refuse them; they are evaluated anyway)
    qa              {wording: {
                        "n": int,
                        "valid_format": float   share of answers whose members are all options
                                                of the question's template,
                        "groups": {group: {"n": int, "model": float, "majority_template": float,
                                           "majority_question": float, "ablated": float}},
                        "by_template": {"<template_id>": same row as groups}}}
                    group = "overall" | question type ("single-verify", ...) | "attr/<attribute_type>"
                    | "verify+choose"; "ablated" only with ``ablation``
    findings        {"findings": {code: name asked}, wording: {"model": score, "ablated": score | null}}
                    score = training.findings.score_findings: {"per_finding": {code: {"name", "n",
                    "n_pos", "auc", "sensitivity", "specificity", "balanced_accuracy"}}, "macro": {...}}
    reports         null (n_reports == 0) or {"n": int, "n_empty_reference": int,
                        "metrics": {"bleu1".."bleu4", "meteor", "rouge1", "rouge2", "rougeL": float},
                        "examples": [{"ecg_id", "reference", "prediction"}] (first 5)}
    predictions_file  str | null   JSON lines, one per QA answer and report (see below)

Each line of the predictions file: ``{"task": "qa"|"report", "wording", "ecg_id", "template_id",
"question_type", "attribute_type", "question", "reference", "prediction", "correct",
"ablated_prediction"}`` (the QA keys are null for reports).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from diagecg.answers import format_answer, normalize_answer
from diagecg.calibration import calibrate_options, fit_calibration, read_calibration_results
from diagecg.config import ConfigMixin, PreprocessConfig, _check
from diagecg.constants import CALIBRATION_RESULTS, RUN_SUMMARY
from diagecg.datasets import resolve_data_roots, seeded_subset, stratified_subset
from diagecg.datasets.ecgqa import (
    WORDINGS,
    AnswerVocabulary,
    QASample,
    Wording,
    finding_questions,
    generate_questions,
    load_answer_vocab,
    load_ecgqa_samples,
)
from diagecg.datasets.ptbxl import TEST_FOLDS, TRAIN_FOLDS, PtbxlDataset
from diagecg.datasets.reports import ScpStatement, load_scp_table, report_text
from diagecg.decoding import option_continuations
from diagecg.llm_meta import has_llm_checkpoint, read_llm_meta
from diagecg.nn.checkpoint import load_tokenizer
from diagecg.nn.ecg_tokenizer import EcgTokenizer
from diagecg.nn.generation import decoding_policy, greedy_generate
from diagecg.nn.llm_checkpoint import load_llm_checkpoint
from diagecg.prompts import encode_prompt
from diagecg.scoring import NEGATIVE, ablation_permutation, ruler_scores, score_findings
from diagecg.training.ecg_data import load_signals, source_fs_hz
from diagecg.training.encode_records import encode_signals
from diagecg.training.findings import finding_sample_weights, option_probabilities, select_findings
from diagecg.training.metrics import OVERALL, exact_match_by_type, majority_predictions, report_metrics
from diagecg.types import F32Array, I64Array, PatientInfo

logger = logging.getLogger(__name__)

RESULTS_SCHEMA_VERSION = 1
PREDICTIONS_SUFFIX = ".predictions.jsonl"  # beside out_file
N_REPORT_EXAMPLES = 5
EVAL_WORDINGS: tuple[str, ...] = ("template", "paraphrase")  # "mixed" would blur the two
VERIFY_CHOOSE: tuple[str, ...] = ("single-verify", "single-choose")
VERIFY_CHOOSE_GROUP = "verify+choose"

# Each prediction function maps (ecg_ids, questions) to generated texts, in order.
PredictFn = Callable[[Sequence[int], Sequence[str]], list[str]]


@dataclasses.dataclass(frozen=True)
class EvalConfig(ConfigMixin):
    """What ``diagecg eval`` measures, on which records, with which checkpoint."""

    checkpoint_dir: str = "runs/instruct"  # output folder of ``diagecg train instruct``
    data_dir: str = "data"  # shared data root (holding ptbxl/ and ecgqa/) or the ptbxl folder itself
    # also the records of ptbxl_full/ beside ptbxl/ when the data root has it (diagecg.datasets.ptbxl)
    ptbxl_full: bool = True
    out_file: str | None = None  # results JSON; predictions go beside it (PREDICTIONS_SUFFIX)
    folds: tuple[int, ...] = TEST_FOLDS  # evaluated; must not overlap any fold the checkpoint trained on
    train_folds: tuple[int, ...] = TRAIN_FOLDS  # where the majority baselines count answers
    wordings: tuple[str, ...] = EVAL_WORDINGS  # "template" (training wording) / "paraphrase" (held out)
    include_ecgqa_noise: bool = True  # add ECG-QA's released noise questions on the evaluated records
    max_records: int | None = None  # a seeded stratified subset of the evaluated records; None = all
    max_questions: int | None = None  # per wording: a seeded subset (same questions for every wording)
    n_reports: int | None = None  # reports to generate (seeded subset); None = all, 0 = none
    max_new_tokens: int | None = None  # None = the checkpoint's GenerationConfig.max_new_tokens
    seed: int = 0  # question generation and subsets
    ablation: bool = True  # also score the model with each record's ECG tokens swapped for another's
    finding_min_positives: int = 10  # statements with this many positives get a per-finding row (and macro)
    n_bootstrap: int = 1000  # bootstrap draws of the per-finding AUCs' 95% intervals; 0 = none
    # fit the per-finding calibration (diagecg.calibration.fit_calibration) on these folds' answers: run it
    # on a validation fold (9), never on the test fold; export writes it into the bundle
    calibrate: bool = False
    # the calibration the runtime will answer with (results of a calibrate run on another fold); None =
    # the checkpoint's calibration_results.json when it exists: sensitivity, specificity and ECE are then
    # those of the calibrated decision rule
    calibration_file: str | None = None
    batch_size: int = 16  # prompts per generate() call
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    progress: bool = True  # tqdm bars

    def __post_init__(self) -> None:
        n = "EvalConfig"
        for name in ("folds", "train_folds"):
            folds = getattr(self, name)
            _check(len(folds) > 0 and all(1 <= f <= 10 for f in folds), n, name, folds,
                   "a non-empty tuple of PTB-XL folds 1-10")
        _check(not set(self.folds) & set(self.train_folds), n, "folds", self.folds,
               f"must be disjoint from train_folds {self.train_folds}")
        _check(len(self.wordings) > 0 and all(w in WORDINGS for w in self.wordings)
               and len(set(self.wordings)) == len(self.wordings), n, "wordings", self.wordings,
               f"a non-empty tuple of distinct values from {WORDINGS}")
        _check(self.max_records is None or self.max_records >= 1, n, "max_records", self.max_records,
               "None or >= 1")
        _check(self.max_questions is None or self.max_questions >= 1, n, "max_questions", self.max_questions,
               "None or >= 1")
        _check(self.n_reports is None or self.n_reports >= 0, n, "n_reports", self.n_reports, "None or >= 0")
        _check(self.max_new_tokens is None or self.max_new_tokens >= 1, n, "max_new_tokens",
               self.max_new_tokens, "None or >= 1")
        _check(self.batch_size >= 1, n, "batch_size", self.batch_size, "must be >= 1")
        _check(self.finding_min_positives >= 1, n, "finding_min_positives", self.finding_min_positives,
               "must be >= 1")
        _check(self.n_bootstrap >= 0, n, "n_bootstrap", self.n_bootstrap, "must be >= 0")
        _check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), n, "device",
               self.device, "'auto', 'cpu', 'cuda' or 'cuda:N'")


# --- data ------------------------------------------------------------------------------------


@dataclasses.dataclass
class EvalData:
    """The questions and report references of one evaluation, before any model is run."""

    ecg_ids: list[int]  # evaluated records (encoded, in the evaluated folds)
    questions: dict[str, list[QASample]]  # wording -> samples (same questions, different wording)
    train_questions: list[QASample]  # the majority baselines count answers here
    reports: list[tuple[int, str]]  # (ecg_id, reference report)
    n_empty_reference: int  # evaluated records without any statement (no report reference)
    answer_vocab: AnswerVocabulary
    # what each training question counts in the majority baselines (its record's statement weight;
    # 1 for records without statement labels, which are asked about their superclasses only)
    train_weights: list[float] | None = None


def build_eval_data(
    cfg: EvalConfig,
    ptbxl: PtbxlDataset,
    scp_table: dict[str, ScpStatement],
    ecgqa_root: Path,
    ecg_ids: Sequence[int],
    train_ids: Sequence[int],
) -> EvalData:
    """Questions per wording, the baseline's training questions and the report references.

    Args:
        cfg: the evaluation config (wordings, noise questions, subsets, seed).
        ptbxl: PTB-XL labels.
        scp_table: from ``load_scp_table``.
        ecgqa_root: the ECG-QA ``ptbxl`` folder.
        ecg_ids: evaluated records (all in ``cfg.folds``).
        train_ids: records of ``cfg.train_folds`` (for the majority baselines).

    Raises:
        ValueError: an evaluated record lies outside ``cfg.folds``, or there is nothing to ask.
    """
    outside = [i for i in ecg_ids if ptbxl.entries[i].strat_fold not in cfg.folds]
    if outside:
        raise ValueError(f"{len(outside)} evaluated records are outside folds {cfg.folds}, "
                         f"e.g. {outside[:5]}")
    vocab = load_answer_vocab(ecgqa_root)
    ids = list(ecg_ids)
    # ECG-QA's released questions (all splits here: its split is not PTB-XL's folds), read once
    released: dict[bool, list[QASample]] = {}
    if cfg.include_ecgqa_noise:
        wanted = set(ids) | set(train_ids)
        for paraphrased in sorted({w == "paraphrase" for w in cfg.wordings} | {False}):
            released[paraphrased] = load_ecgqa_samples(ecgqa_root, wanted, splits=("train", "valid"),
                                                       paraphrased=paraphrased)
    test_set = set(ids)
    questions: dict[str, list[QASample]] = {}
    for wording in cfg.wordings:
        samples = generate_questions(ptbxl, ids, scp_table, cfg.seed, answer_vocab=vocab,
                                     wording=typing.cast(Wording, wording))
        # the paraphrase wording of ECG-QA's questions is its own paraphrased release (never trained on)
        samples += [s for s in released.get(wording == "paraphrase", []) if s.ecg_id in test_set]
        keep = seeded_subset(range(len(samples)), cfg.max_questions, cfg.seed, "eval-subset")
        questions[wording] = [samples[i] for i in keep]
    if not any(questions.values()):
        raise ValueError(f"no questions for the {len(ids)} evaluated records in folds {cfg.folds}")

    train = generate_questions(ptbxl, list(train_ids), scp_table, cfg.seed, answer_vocab=vocab)
    train += [s for s in released.get(False, []) if s.ecg_id not in test_set]
    stmt_w = dict(zip(train_ids, ptbxl.statement_weights(list(train_ids)), strict=True))
    train_weights = [float(stmt_w[s.ecg_id]) if ptbxl.entries[s.ecg_id].statements_labelled else 1.0
                     for s in train]

    references = [(i, report_text(ptbxl.entries[i], scp_table, "en")) for i in ids]
    with_text = [(i, r) for i, r in references if r]
    chosen = seeded_subset(range(len(with_text)), cfg.n_reports, cfg.seed, "eval-subset")
    reports = [] if cfg.n_reports == 0 else [with_text[k] for k in chosen]
    return EvalData(ecg_ids=ids, questions=questions, train_questions=train, reports=reports,
                    n_empty_reference=len(references) - len(with_text), answer_vocab=vocab,
                    train_weights=train_weights)


def eval_record_strata(ptbxl: PtbxlDataset,
                       ecg_ids: Sequence[int]) -> list[tuple[bool, bool, tuple[str, ...]]]:
    """The stratum of each record for ``max_records``: whether its statements are labelled, whether it
    has AFIB, and its superclasses."""
    return [(e.statements_labelled, "AFIB" in e.scp_codes, tuple(sorted(e.superclasses)))
            for e in (ptbxl.entries[i] for i in ecg_ids)]


def eval_record_subset(ptbxl: PtbxlDataset, ecg_ids: Sequence[int], max_records: int | None,
                       seed: int) -> list[int]:
    """The records ``diagecg eval`` evaluates with ``max_records`` and ``seed``: a seeded subset of
    ``ecg_ids`` with the share of each :func:`eval_record_strata` stratum kept."""
    return stratified_subset(list(ecg_ids), eval_record_strata(ptbxl, ecg_ids), max_records, seed,
                             "eval-records")


# --- scoring ---------------------------------------------------------------------------------


def _valid_format(sample: QASample, prediction: str, vocab: AnswerVocabulary) -> bool:
    members = normalize_answer(prediction)
    if not members:
        return False
    try:
        options = set(vocab.options(sample.template_id))
    except ValueError:
        return True  # a template without an option list: only the exact match can judge it
    return members <= options


def _rows(samples: Sequence[QASample], columns: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """Per group: n and each column's exact-match accuracy."""
    scored = {name: exact_match_by_type(samples, preds) for name, preds in columns.items()}
    first = next(iter(scored.values()))
    return {group: {"n": row["n"], **{name: scored[name][group]["accuracy"] for name in scored}}
            for group, row in first.items()}


def score_qa(
    samples: Sequence[QASample],
    predictions: Sequence[str],
    train_samples: Sequence[QASample],
    vocab: AnswerVocabulary,
    ablated: Sequence[str] | None = None,
    train_weights: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Exact match of the model, of both majority baselines and of the ECG-ablated model, per group
    (plus ``verify+choose``) and per template.

    Args:
        samples: evaluated questions.
        predictions: the model's generated answers, one per sample.
        train_samples: where the baselines count answers.
        vocab: answer options per template (for ``valid_format``).
        ablated: the answers with each record's ECG tokens swapped for another record's (column
            ``ablated``); None = no such column.
        train_weights: what each train sample counts in the baselines' majorities; None = 1 each.

    Returns:
        ``{"n", "valid_format", "groups", "by_template"}`` as in the module docstring.
    """
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} predictions")
    if not samples:
        return {"n": 0, "valid_format": 0.0, "groups": {}, "by_template": {}}
    columns = {
        "model": list(predictions),
        "majority_template": majority_predictions(train_samples, samples, "template", train_weights),
        "majority_question": majority_predictions(train_samples, samples, "question", train_weights),
    }
    if ablated is not None:
        columns["ablated"] = list(ablated)
    groups = _rows(samples, columns)
    vc = [k for k, s in enumerate(samples) if s.question_type in VERIFY_CHOOSE]
    if vc:
        groups[VERIFY_CHOOSE_GROUP] = _rows([samples[k] for k in vc],
                                            {c: [p[k] for k in vc] for c, p in columns.items()})[OVERALL]
    by_template: dict[str, dict[str, float]] = {}
    for tid in sorted({s.template_id for s in samples}):
        idx = [k for k, s in enumerate(samples) if s.template_id == tid]
        sub = [samples[k] for k in idx]
        by_template[str(tid)] = _rows(sub, {c: [p[k] for k in idx] for c, p in columns.items()})[OVERALL]
    valid = sum(_valid_format(s, p, vocab) for s, p in zip(samples, predictions, strict=True))
    return {"n": len(samples), "valid_format": valid / len(samples), "groups": groups,
            "by_template": by_template}


def evaluate_predictions(
    data: EvalData, predict_qa: PredictFn, predict_report: PredictFn, report_question: str,
    predict_ablated: PredictFn | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None, list[dict[str, Any]]]:
    """Run the prediction functions over ``data`` and score them.

    Args:
        data: from :func:`build_eval_data`.
        predict_qa: (ecg_ids, questions) -> answers.
        predict_report: (ecg_ids, questions) -> reports (called with the report question).
        report_question: the checkpoint's fixed report instruction.
        predict_ablated: the same model with each record's ECG swapped for another's; None = skip.

    Returns:
        (``qa`` per wording, ``reports`` or None, prediction rows for the predictions file).
    """
    qa: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for wording, samples in data.questions.items():
        logger.info("QA, %s wording: %d questions", wording, len(samples))
        ids, questions = [s.ecg_id for s in samples], [s.question for s in samples]
        preds = predict_qa(ids, questions)
        ablated = predict_ablated(ids, questions) if predict_ablated is not None else None
        qa[wording] = score_qa(samples, preds, data.train_questions, data.answer_vocab, ablated,
                               data.train_weights)
        for k, (s, p) in enumerate(zip(samples, preds, strict=True)):
            ref = format_answer(s.answers)
            rows.append({"task": "qa", "wording": wording, "ecg_id": s.ecg_id, "template_id": s.template_id,
                         "question_type": s.question_type, "attribute_type": s.attribute_type,
                         "question": s.question, "reference": ref, "prediction": p,
                         "correct": normalize_answer(p) == normalize_answer(ref),
                         "ablated_prediction": None if ablated is None else ablated[k]})
    reports = None
    if data.reports:
        logger.info("reports: %d records", len(data.reports))
        ids = [i for i, _ in data.reports]
        refs = [r for _, r in data.reports]
        preds = predict_report(ids, [report_question] * len(ids))
        metrics = report_metrics(preds, refs)
        n = int(metrics.pop("n"))
        reports = {"n": n, "n_empty_reference": data.n_empty_reference, "metrics": metrics,
                   "examples": [{"ecg_id": i, "reference": r, "prediction": p}
                                for i, r, p in list(zip(ids, refs, preds, strict=True))[:N_REPORT_EXAMPLES]]}
        for i, r, p in zip(ids, refs, preds, strict=True):
            rows.append({"task": "report", "wording": None, "ecg_id": i, "template_id": None,
                         "question_type": None, "attribute_type": None, "question": report_question,
                         "reference": r, "prediction": p, "correct": None, "ablated_prediction": None})
    return qa, reports, rows


# --- checkpoint folds ------------------------------------------------------------------------


def _fold_lists(obj: Any) -> dict[str, tuple[int, ...]]:
    """Every ``*folds`` key of a run summary (top level, else under ``config``) holding fold numbers."""
    out: dict[str, tuple[int, ...]] = {}
    if not isinstance(obj, dict):
        return out
    for source in (obj.get("config"), obj):  # the top level wins
        if isinstance(source, dict):
            for key, value in source.items():
                if (key.endswith("folds") and isinstance(value, (list, tuple)) and value
                        and all(isinstance(v, int) for v in value)):
                    out[key] = tuple(value)
    return out


def checkpoint_training_folds(checkpoint_dir: str | Path) -> dict[str, tuple[int, ...]]:
    """Every PTB-XL fold the checkpoint's stages used.

    A checkpoint with a lineage (``LlmMeta.lineage``: every stage from the ECG tokenizer on, with
    its train and validation folds) answers exactly. Older checkpoints are followed as before:
    Follows the chain of LLM stages (instruct -> the pretrain checkpoint it started from, when
    ``meta.base_model`` names one) and reads each stage's ``llm_meta.json`` (``train_folds``,
    ``valid_folds``) and every ``*folds`` list of its ``run_summary.json`` (top level or under
    ``config``; e.g. ``pretrain_train_folds``). Keys ending in ``train_folds`` are training folds.

    Returns:
        ``{"<stage>.<key>": folds}``, e.g. ``{"instruct.train_folds": (1, ..., 8)}``; empty when
        nothing is recorded.
    """
    if has_llm_checkpoint(checkpoint_dir):
        lineage = read_llm_meta(checkpoint_dir).lineage
        if lineage:  # recorded by every stage and carried forward: exact
            exact: dict[str, tuple[int, ...]] = {}
            for rec in lineage:
                for key in ("train_folds", "valid_folds"):
                    if getattr(rec, key):
                        exact[f"{rec.stage}.{key}"] = tuple(sorted(getattr(rec, key)))
            return exact
    found: dict[str, tuple[int, ...]] = {}
    d: Path | None = Path(checkpoint_dir).resolve()
    seen: set[Path] = set()
    while d is not None and d not in seen:
        seen.add(d)
        meta = read_llm_meta(d) if has_llm_checkpoint(d) else None
        label = meta.stage if meta is not None else d.name
        while any(k.startswith(label + ".") for k in found):
            label += "'"
        summary: Any = None
        if (d / RUN_SUMMARY).is_file():
            try:
                summary = json.loads((d / RUN_SUMMARY).read_text())
            except json.JSONDecodeError:
                logger.warning("cannot read %s; its folds are unknown", d / RUN_SUMMARY)
        lists = _fold_lists(summary)
        for key in ("train_folds", "valid_folds"):
            lists[key] = tuple(sorted(set(lists.get(key, ())) | set(getattr(meta, key, ()) or ())))
        found.update({f"{label}.{k}": tuple(sorted(v)) for k, v in sorted(lists.items()) if v})
        next_dir = None
        if meta is not None and meta.base_model.kind == "llm_checkpoint":
            ref = meta.base_model
            base = d / ref.path if ref.copied else Path(ref.path)
            next_dir = base.resolve() if base.is_dir() else None
        d = next_dir
    return found


def check_folds(cfg: EvalConfig, recorded: dict[str, tuple[int, ...]]) -> None:
    """Refuse to evaluate on folds a stage trained on; warn on folds used for model selection.

    Raises:
        ValueError: ``cfg.folds`` overlaps recorded training folds.
    """
    for name, folds in recorded.items():
        overlap = sorted(set(cfg.folds) & set(folds))
        if not overlap:
            continue
        if name.endswith("train_folds"):
            raise ValueError(f"EvalConfig.folds={cfg.folds} overlaps the checkpoint's training folds "
                             f"({name}={folds}): evaluate on held-out folds only")
        logger.warning("evaluating on fold(s) %s that the checkpoint used for validation (%s)", overlap, name)
    if not recorded:
        logger.warning("%s records no training folds; assuming folds %s were held out",
                       cfg.checkpoint_dir, cfg.folds)


# --- results ---------------------------------------------------------------------------------


def format_results(results: dict[str, Any]) -> str:
    """Plain-text tables: QA accuracy per group beside both baselines, per wording; then report metrics.

    Args:
        results: the dict returned by :func:`main`.
    """
    lines = [f"checkpoint {results['checkpoint_dir']}  folds {results['folds']}  "
             f"records {results['n_records']}  (baselines counted on folds {results['train_folds']})"]
    header = f"{'group':<26} {'n':>6} {'model':>7} {'ablated':>8} {'maj/tpl':>8} {'maj/q':>7}"
    for wording, block in results["qa"].items():
        lines += ["", f"QA exact match, {wording} wording  (answers in the template's options: "
                      f"{block['valid_format']:.1%}; ablated = each record's ECG swapped for another's)",
                  header, "-" * len(header)]
        for group, row in block["groups"].items():
            abl = f"{row['ablated']:>8.3f}" if "ablated" in row else f"{'-':>8}"
            lines.append(f"{group:<26} {int(row['n']):>6} {row['model']:>7.3f} {abl} "
                         f"{row['majority_template']:>8.3f} {row['majority_question']:>7.3f}")
    lines += format_findings(results.get("findings") or {})
    reports = results.get("reports")
    if reports:
        m = reports["metrics"]
        lines += ["", f"Report generation ({reports['n']} records)",
                  "  ".join(f"{k.upper() if k.startswith('bleu') else k}={m[k]:.3f}" for k in
                            ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge1", "rouge2", "rougeL"))]
    if results.get("predictions_file"):
        lines += ["", f"predictions: {results['predictions_file']}"]
    return "\n".join(lines)


def format_findings(findings: dict[str, Any]) -> list[str]:
    """The per-finding table of each wording: AUC, sensitivity, specificity, balanced accuracy of the
    model and the AUC / balanced accuracy of its ECG ablation; then the macro means."""
    lines: list[str] = []
    for wording, block in findings.items():
        if not isinstance(block, dict) or not block.get("model"):  # "findings": the names asked
            continue
        model, abl = block["model"], block.get("ablated")
        ruler = findings.get("ruler") or {}
        header = (f"{'finding':<10} {'pos/n':>8} {'AUC':>6} {'sens':>6} {'spec':>6} {'balacc':>7} "
                  f"{'AUC abl':>8} {'balacc abl':>11} {'ruler AUC':>10}  measurement")
        lines += ["", f"Findings, {wording} wording: p(present) = 1 - p(no) from the answer logits", header,
                  "-" * len(header)]

        def f3(v: float | None) -> str:
            return "  -  " if v is None or v != v else f"{v:.3f}"

        for code, row in model["per_finding"].items():
            a = abl["per_finding"][code] if abl else None
            lines.append(f"{code:<10} {row['n_pos']:>3}/{row['n']:<4} {f3(row['auc']):>6} "
                         f"{f3(row['sensitivity']):>6} {f3(row['specificity']):>6} "
                         f"{f3(row['balanced_accuracy']):>7} {f3(a['auc'] if a else None):>8} "
                         f"{f3(a['balanced_accuracy'] if a else None):>11} "
                         f"{f3(ruler[code]['auc'] if code in ruler else None):>10}  "
                         f"{ruler[code]['feature'] if code in ruler else ''}")
        for key, label in (("superclass", "superclasses"), ("statement", "statements")):
            m = model["macro"]
            am = abl["macro"] if abl else {}
            lines.append(f"macro, {label} ({m[f'n_{label}']}): AUC {f3(m[f'{key}_auc'])} "
                         f"(ablated {f3(am.get(f'{key}_auc'))}), balanced accuracy "
                         f"{f3(m[f'{key}_balanced_accuracy'])} "
                         f"(ablated {f3(am.get(f'{key}_balanced_accuracy'))})")
        cal = model.get("calibration")
        if cal:
            lines.append(f"calibration (ECE, {cal['presence']['n']} questions): p(present) "
                         f"{f3(cal['presence']['ece'])}, confidence of the yes/no call "
                         f"{f3(cal['answer']['ece'])}")
    return lines


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN float (an AUC without both classes) as None, so the JSON stays strict."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def write_results(results: dict[str, Any], rows: list[dict[str, Any]], out_file: str | Path) -> Path:
    """Write the results JSON and the predictions JSON lines beside it; returns the latter's path."""
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    pred_path = out.with_name(out.name + PREDICTIONS_SUFFIX) if out.suffix != ".json" else \
        out.with_suffix(PREDICTIONS_SUFFIX)
    with pred_path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")
    results["predictions_file"] = str(pred_path)
    out.write_text(json.dumps(json_safe(results), indent=2, sort_keys=True, allow_nan=False) + "\n")
    return pred_path


# --- the model -------------------------------------------------------------------------------


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"EvalConfig.device={name!r}: CUDA is not available on this machine")
    return torch.device(name)


class LlmPredictor:
    """(ecg_ids, questions) -> greedy answers of an instruction-tuned checkpoint, batched.

    Prompts are built exactly as in training and in the runtime: the checkpoint's own
    ``PromptConfig`` and ``VocabConfig`` (``diagecg.prompts.encode_prompt``), text pieces through
    the base text tokenizer (``text_tokenizer.json``, no ECG tokens), the record's FSQ indices and
    patient features. Answers are decoded with the same text tokenizer, as the runtime does.

    Args:
        model: the LLM (eval mode).
        text_tokenizer: the checkpoint's base text tokenizer (``tokenizers.Tokenizer``).
        meta: the checkpoint metadata (``.prompt``, ``.vocab``, ``.generation``).
        ecg_indices: ecg_id -> int64 (frames,) FSQ indices.
        patients: ecg_id -> patient features for the prompt.
        batch_size: prompts per ``generate`` call.
        max_new_tokens: None = ``meta.generation.max_new_tokens``.
        progress: tqdm bars.
    """

    def __init__(self, model: Any, text_tokenizer: Any, meta: Any, ecg_indices: dict[int, I64Array],
                 patients: dict[int, PatientInfo], batch_size: int, max_new_tokens: int | None = None,
                 progress: bool = False) -> None:
        self.model, self.text_tokenizer, self.meta = model, text_tokenizer, meta
        self.ecg_indices, self.patients = ecg_indices, patients
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens or meta.generation.max_new_tokens
        self.progress = progress
        self.n_over_context = 0  # prompts + max_new_tokens longer than meta.generation.n_ctx, so far
        self.context = getattr(getattr(model, "config", None), "max_position_embeddings", None) or None
        v = meta.vocab
        # the runtime's policy: an answer never holds ECG codes/markers, bos, pad, or rows the text
        # tokenizer cannot decode
        self.policy = decoding_policy(v, model, text_tokenizer)
        self.stop_ids = list(self.policy.stop_ids)
        self.pad_id = v.pad_id if v.pad_id is not None else self.stop_ids[0]
        self.banned = sorted(self.policy.banned_ids)

    def encode_text(self, text: str) -> list[int]:
        return list(self.text_tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.text_tokenizer.decode(list(ids), skip_special_tokens=True)).strip()

    def prompt_ids(self, ecg_id: int, question: str) -> list[int]:
        return encode_prompt(self.meta.prompt, self.meta.vocab, self.encode_text, question=question,
                             patient=self.patients.get(ecg_id, PatientInfo()),
                             ecg_indices=self.ecg_indices[ecg_id].tolist())

    def with_ecg_of(self, source: dict[int, int]) -> LlmPredictor:
        """The same model asked about record ``i`` with the ECG tokens of record ``source[i]`` (and
        record ``i``'s patient features): the ECG ablation."""
        swapped = copy.copy(self)
        swapped.ecg_indices = {i: self.ecg_indices[j] for i, j in source.items()}
        return swapped

    def option_probabilities(self, ecg_ids: Sequence[int], questions: Sequence[str],
                             options: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Each question's answer options scored as whole continuations, normalised over the options
        (``training.findings.option_probabilities``)."""
        prompts = [self.prompt_ids(i, q) for i, q in zip(ecg_ids, questions, strict=True)]
        v, cfg = self.meta.vocab, self.meta.prompt
        cache: dict[tuple[str, ...], list[list[int]]] = {}
        encoded = [cache.setdefault(tuple(opts), option_continuations(cfg, self.encode_text, opts, v.eos_id))
                   for opts in options]
        return option_probabilities(self.model, prompts, encoded, pad_id=self.pad_id,
                                    batch_size=4 * self.batch_size)

    def __call__(self, ecg_ids: Sequence[int], questions: Sequence[str]) -> list[str]:
        prompts = [self.prompt_ids(i, q) for i, q in zip(ecg_ids, questions, strict=True)]
        n_ctx = self.meta.generation.n_ctx
        over = sum(len(p) + self.max_new_tokens > n_ctx for p in prompts)
        if over:  # the runtime would refuse these; evaluated anyway, and counted
            logger.warning("%d of %d prompts (+ %d new tokens) exceed the runtime context of %d tokens",
                           over, len(prompts), self.max_new_tokens, n_ctx)
        self.n_over_context += over
        outs = greedy_generate(self.model, prompts, pad_id=self.pad_id, stop_ids=self.stop_ids,
                               max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                               banned_ids=self.banned, context=self.context, progress=self.progress)
        return [self.decode(o) for o in outs]


def encode_records(
    tokenizer: EcgTokenizer, preprocess_cfg: PreprocessConfig, ptbxl: PtbxlDataset, ecg_ids: Sequence[int],
    progress: bool = False,
) -> tuple[dict[int, I64Array], dict[int, str], dict[int, F32Array]]:
    """FSQ indices of the evaluated records with the checkpoint's own ECG tokenizer.

    Returns:
        (ecg_id -> int64 (tokens,) indices, skipped ecg_id -> reason for records failing validation,
        ecg_id -> float32 measurements of ``diagecg.measure`` for the ruler baseline).
    """
    loaded = load_signals(ptbxl, ecg_ids, preprocess_cfg, progress=progress)
    indices = encode_signals(tokenizer, loaded.signals, loaded.features)  # (N, 12, samples) -> (N, tokens)
    if loaded.skipped:
        logger.warning("%d of %d evaluated records failed validation and are skipped", len(loaded.skipped),
                       len(ecg_ids))
    return ({i: row for i, row in zip(loaded.ids, indices, strict=True)}, loaded.skipped,
            dict(zip(loaded.ids, loaded.features, strict=True)))


def calibration_path(cfg: EvalConfig) -> str | None:
    """The calibration results the evaluation decides with: ``cfg.calibration_file``, else the
    checkpoint's ``calibration_results.json`` when it exists (what export ships), else None."""
    if cfg.calibration_file:
        return cfg.calibration_file
    default = Path(cfg.checkpoint_dir) / CALIBRATION_RESULTS
    return str(default) if default.is_file() else None


def load_calibration(cfg: EvalConfig) -> dict[str, dict[str, Any]]:
    """Finding name -> calibration (``diagecg.calibration``) of :func:`calibration_path`; empty without.

    Raises:
        ValueError: it was fitted on a fold this evaluation tests, or holds no calibration.
    """
    path = calibration_path(cfg)
    return {} if path is None else read_calibration_results(Path(path), cfg.folds)


def apply_calibration(samples: Sequence[QASample], probs: Sequence[np.ndarray],
                      options: Sequence[Sequence[str]], calibration: Mapping[str, Mapping[str, Any]]
                      ) -> tuple[list[np.ndarray], list[bool] | None]:
    """Each verify answer as the runtime gives it (``diagecg.calibration.calibrate_options`` where its
    finding is calibrated): the probabilities and the yes/no calls; ``(probs, None)`` without calibration."""
    if not calibration:
        return list(probs), None
    out, calls = [], []
    for s, p, opts in zip(samples, probs, options, strict=True):
        neg = list(opts).index(NEGATIVE)
        cal = calibration.get(s.attributes[0])
        if cal is None:
            out.append(np.asarray(p))
            calls.append(int(np.argmax(p)) != neg)
            continue
        q, best = calibrate_options(np.asarray(p), neg, cal)
        out.append(q)
        calls.append(best != neg)
    return out, calls


def evaluate_findings(
    cfg: EvalConfig, ptbxl: PtbxlDataset, scp_table: dict[str, ScpStatement], vocab: AnswerVocabulary,
    ecg_ids: Sequence[int], predictor: LlmPredictor, ablated: LlmPredictor | None,
    features: dict[int, F32Array] | None = None,
) -> dict[str, Any]:
    """Per-finding verify metrics of the model (and its ECG ablation), per wording
    (``training.findings``): ``{wording: {"model": score, "ablated": score | None}}`` plus ``findings``
    (code -> name asked), ``ruler`` (``diagecg.scoring.ruler_scores``: the defining measurement's own
    AUC on the same questions, with ``features``) and, with ``cfg.calibrate``, ``calibration``
    (``diagecg.calibration.fit_calibration`` of the template-wording answers, keyed by the name asked)."""
    names = select_findings(ptbxl, ecg_ids, scp_table, vocab, cfg.finding_min_positives)
    codes_by_name = {name: code for code, name in names.items()}
    out: dict[str, Any] = {"findings": names}
    calibration = {} if cfg.calibrate else load_calibration(cfg)
    if calibration:
        out["calibrated_with"] = {"file": calibration_path(cfg), "findings": sorted(calibration)}
    for wording in cfg.wordings:
        samples = finding_questions(ptbxl, list(ecg_ids), names, scp_table, cfg.seed,
                                    wording=wording)  # type: ignore[arg-type]
        logger.info("findings, %s wording: %d verify questions (%d findings)", wording, len(samples),
                    len(names))
        ids, questions = [s.ecg_id for s in samples], [s.question for s in samples]
        options = [vocab.options(s.template_id) for s in samples]
        codes = [codes_by_name[s.attributes[0]] for s in samples]
        weights = finding_sample_weights(ptbxl, ids, codes)  # AF-enriched subset corrected
        block: dict[str, Any] = {}
        for label, p in (("model", predictor), ("ablated", ablated)):
            if p is None:
                block[label] = None
                continue
            raw = p.option_probabilities(ids, questions, options)
            probs, calls = apply_calibration(samples, raw, options, calibration)
            block[label] = score_findings(samples, codes, probs, options, cfg.finding_min_positives,
                                          weights=weights, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed,
                                          calls=calls)
            if label == "model" and wording == cfg.wordings[0]:
                truth = [s.answers != (NEGATIVE,) for s in samples]
                if features is not None:
                    out["ruler"] = ruler_scores(ids, codes, truth, features)
                if cfg.calibrate:  # fitted on the model's own probabilities
                    present = [1.0 - float(pr[list(o).index(NEGATIVE)])
                               for pr, o in zip(raw, options, strict=True)]
                    fitted = fit_calibration(codes, present, truth, list(weights))
                    out["calibration"] = {names[c]: {"code": c, **v} for c, v in fitted.items()}
        out[wording] = block
    return out


# --- main ------------------------------------------------------------------------------------


def main(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate an instruction-tuned checkpoint on held-out PTB-XL folds.

    Args:
        cfg: what to evaluate.

    Returns:
        The results dict described in the module docstring (also written to ``cfg.out_file``).

    Raises:
        FileNotFoundError: data or checkpoint files are missing.
        ValueError: ``cfg.folds`` overlap folds the checkpoint trained on; no records to evaluate.
        CheckpointError: the checkpoint is incomplete or inconsistent.
    """
    t_start = time.time()
    roots = resolve_data_roots(cfg.data_dir)
    ptbxl_root, ecgqa_root = roots.ptbxl, roots.ecgqa
    meta = read_llm_meta(cfg.checkpoint_dir)
    recorded = checkpoint_training_folds(cfg.checkpoint_dir)
    check_folds(cfg, recorded)
    if meta.stage != "instruct":
        logger.warning("%s is a %s checkpoint: it was not trained to answer questions",
                       cfg.checkpoint_dir, meta.stage)
    device = _resolve_device(cfg.device)
    model, _, meta, paths = load_llm_checkpoint(cfg.checkpoint_dir, merge=True)  # what export ships
    model.to(device).eval()
    text_tokenizer = Tokenizer.from_file(str(paths.text_tokenizer))
    ecg_tokenizer, preprocess_cfg, _, _ = load_tokenizer(paths.ecg_tokenizer_dir, device)

    ptbxl = PtbxlDataset.from_data_dir(cfg.data_dir, full=cfg.ptbxl_full)
    scp_table = load_scp_table(ptbxl_root)
    fs_src = source_fs_hz(preprocess_cfg.fs_hz)
    test_ids = eval_record_subset(ptbxl, ptbxl.ids(cfg.folds, fs_hz=fs_src), cfg.max_records, cfg.seed)
    if not test_ids:
        raise ValueError(f"no {fs_src} Hz PTB-XL records in folds {cfg.folds} under {ptbxl_root}")
    indices, skipped, features = encode_records(ecg_tokenizer, preprocess_cfg, ptbxl, test_ids, cfg.progress)
    ecg_ids = [i for i in test_ids if i in indices]
    train_ids = ptbxl.ids(cfg.train_folds, fs_hz=fs_src)
    data = build_eval_data(cfg, ptbxl, scp_table, ecgqa_root, ecg_ids, train_ids)

    patients = {i: ptbxl.entries[i].patient for i in ecg_ids}
    predictor = LlmPredictor(model, text_tokenizer, meta, indices, patients, cfg.batch_size,
                             cfg.max_new_tokens, cfg.progress)
    ablated = None
    if cfg.ablation:
        folds = [ptbxl.entries[i].strat_fold or 0 for i in ecg_ids]  # 0: a training record of unknown fold
        source = ablation_permutation(ecg_ids, folds, cfg.seed)
        ablated = predictor.with_ecg_of(source)
    qa, reports, rows = evaluate_predictions(data, predictor, predictor, meta.prompt.report_question, ablated)
    findings = evaluate_findings(cfg, ptbxl, scp_table, data.answer_vocab, ecg_ids, predictor, ablated,
                                 features)
    results: dict[str, Any] = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "checkpoint_dir": str(cfg.checkpoint_dir),
        "data_dir": str(ptbxl_root),
        "folds": list(cfg.folds),
        "train_folds": list(cfg.train_folds),
        "config": cfg.to_dict(),
        "checkpoint": {"stage": meta.stage, "method": meta.method, "preset": meta.preset,
                       "training_folds": {k: list(v) for k, v in recorded.items()}},
        "device": str(device),
        "n_records": len(ecg_ids),
        "n_records_skipped": len(skipped),
        "n_records_statements_labelled": len(ptbxl.statements_labelled_ids(ecg_ids)),
        "n_prompts_over_context": predictor.n_over_context,
        "qa": qa,
        "findings": json_safe(findings),
        "reports": reports,
        "predictions_file": None,
        "wall_s": round(time.time() - t_start, 3),
    }
    if cfg.out_file:
        write_results(results, rows, cfg.out_file)
        logger.info("wrote %s and %s", cfg.out_file, results["predictions_file"])
    return results

"""Held-out evaluation of an instruction-tuned checkpoint: ECG-QA exact match and reports.

What is measured, on PTB-XL folds the checkpoint never trained on (fold 10 by default: ``ptbxl/``'s fold
10 and, with ``ptbxl_full``, the test split of ``ptbxl_full/``, about 2,100 records; ``max_records``
draws a seeded subset stratified by ``training.eval_data.eval_record_strata``). Statements are asked
only of records whose statements are labelled; superclass and NORM questions of every record. The
AF-enriched subset of ``ptbxl_full`` is corrected for with ``PtbxlDataset.statement_weights``: in the
majority baselines' counts and in every per-finding number (AUC, rates, calibration). Per-finding AUCs
and their macro means come with 95% bootstrap intervals (``n_bootstrap`` draws, records resampled).

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
                    score = diagecg.scoring.score_findings: {"per_finding": {code: {"name", "n",
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
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from diagecg.calibration import calibrate_options, fit_calibration, read_calibration_results
from diagecg.config import PreprocessConfig
from diagecg.constants import CALIBRATION_RESULTS
from diagecg.datasets import resolve_data_roots
from diagecg.datasets.ecgqa import AnswerVocabulary, QASample, finding_questions
from diagecg.datasets.ptbxl import PtbxlDataset
from diagecg.datasets.reports import ScpStatement, load_scp_table
from diagecg.decoding import option_continuations
from diagecg.eval_results import format_results as format_results  # the CLI prints the stage's results
from diagecg.eval_results import json_safe, write_results
from diagecg.llm_meta import read_llm_meta
from diagecg.nn.checkpoint import load_tokenizer
from diagecg.nn.ecg_tokenizer import EcgTokenizer
from diagecg.nn.generation import decoding_policy, greedy_generate
from diagecg.nn.llm_checkpoint import load_llm_checkpoint
from diagecg.prompts import encode_prompt
from diagecg.scoring import NEGATIVE, ablation_permutation, ruler_scores, score_findings
from diagecg.training.device import resolve_device
from diagecg.training.ecg_data import load_signals, source_fs_hz
from diagecg.training.encode_records import encode_signals
from diagecg.training.eval_data import (
    EvalConfig,
    build_eval_data,
    eval_record_subset,
    finding_sample_weights,
    select_findings,
)
from diagecg.training.eval_folds import check_folds, checkpoint_training_folds
from diagecg.training.findings import option_probabilities
from diagecg.training.qa_scoring import evaluate_predictions
from diagecg.types import F32Array, I64Array, PatientInfo

logger = logging.getLogger(__name__)

RESULTS_SCHEMA_VERSION = 1


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

    def __init__(
        self,
        model: Any,
        text_tokenizer: Any,
        meta: Any,
        ecg_indices: dict[int, I64Array],
        patients: dict[int, PatientInfo],
        batch_size: int,
        max_new_tokens: int | None = None,
        progress: bool = False,
    ) -> None:
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
        return encode_prompt(
            self.meta.prompt,
            self.meta.vocab,
            self.encode_text,
            question=question,
            patient=self.patients.get(ecg_id, PatientInfo()),
            ecg_indices=self.ecg_indices[ecg_id].tolist(),
        )

    def with_ecg_of(self, source: dict[int, int]) -> LlmPredictor:
        """The same model asked about record ``i`` with the ECG tokens of record ``source[i]`` (and
        record ``i``'s patient features): the ECG ablation."""
        swapped = copy.copy(self)
        swapped.ecg_indices = {i: self.ecg_indices[j] for i, j in source.items()}
        return swapped

    def option_probabilities(
        self, ecg_ids: Sequence[int], questions: Sequence[str], options: Sequence[Sequence[str]]
    ) -> list[np.ndarray]:
        """Each question's answer options scored as whole continuations, normalised over the options
        (``training.findings.option_probabilities``)."""
        prompts = [self.prompt_ids(i, q) for i, q in zip(ecg_ids, questions, strict=True)]
        v, cfg = self.meta.vocab, self.meta.prompt
        cache: dict[tuple[str, ...], list[list[int]]] = {}
        encoded = [
            cache.setdefault(tuple(opts), option_continuations(cfg, self.encode_text, opts, v.eos_id))
            for opts in options
        ]
        return option_probabilities(
            self.model, prompts, encoded, pad_id=self.pad_id, batch_size=4 * self.batch_size
        )

    def __call__(self, ecg_ids: Sequence[int], questions: Sequence[str]) -> list[str]:
        prompts = [self.prompt_ids(i, q) for i, q in zip(ecg_ids, questions, strict=True)]
        n_ctx = self.meta.generation.n_ctx
        over = sum(len(p) + self.max_new_tokens > n_ctx for p in prompts)
        if over:  # the runtime would refuse these; evaluated anyway, and counted
            logger.warning(
                "%d of %d prompts (+ %d new tokens) exceed the runtime context of %d tokens",
                over,
                len(prompts),
                self.max_new_tokens,
                n_ctx,
            )
        self.n_over_context += over
        outs = greedy_generate(
            self.model,
            prompts,
            pad_id=self.pad_id,
            stop_ids=self.stop_ids,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            banned_ids=self.banned,
            context=self.context,
            progress=self.progress,
        )
        return [self.decode(o) for o in outs]


def encode_records(
    tokenizer: EcgTokenizer,
    preprocess_cfg: PreprocessConfig,
    ptbxl: PtbxlDataset,
    ecg_ids: Sequence[int],
    progress: bool = False,
) -> tuple[dict[int, I64Array], dict[int, str], dict[int, F32Array]]:
    """FSQ indices of the evaluated records with the checkpoint's own ECG tokenizer.

    Returns:
        (ecg_id -> int64 (tokens,) indices, skipped ecg_id -> reason for records failing validation,
        ecg_id -> float32 measurements of ``diagecg.features`` for the ruler baseline).
    """
    loaded = load_signals(ptbxl, ecg_ids, preprocess_cfg, progress=progress)
    indices = encode_signals(tokenizer, loaded.signals, loaded.features)  # (N, 12, samples) -> (N, tokens)
    if loaded.skipped:
        logger.warning(
            "%d of %d evaluated records failed validation and are skipped", len(loaded.skipped), len(ecg_ids)
        )
    return (
        {i: row for i, row in zip(loaded.ids, indices, strict=True)},
        loaded.skipped,
        dict(zip(loaded.ids, loaded.features, strict=True)),
    )


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


def apply_calibration(
    samples: Sequence[QASample],
    probs: Sequence[np.ndarray],
    options: Sequence[Sequence[str]],
    calibration: Mapping[str, Mapping[str, Any]],
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
    cfg: EvalConfig,
    ptbxl: PtbxlDataset,
    scp_table: dict[str, ScpStatement],
    vocab: AnswerVocabulary,
    ecg_ids: Sequence[int],
    predictor: LlmPredictor,
    ablated: LlmPredictor | None,
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
        samples = finding_questions(ptbxl, list(ecg_ids), names, scp_table, cfg.seed, wording=wording)  # type: ignore[arg-type]
        logger.info(
            "findings, %s wording: %d verify questions (%d findings)", wording, len(samples), len(names)
        )
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
            block[label] = score_findings(
                samples,
                codes,
                probs,
                options,
                cfg.finding_min_positives,
                weights=weights,
                n_bootstrap=cfg.n_bootstrap,
                seed=cfg.seed,
                calls=calls,
            )
            if label == "model" and wording == cfg.wordings[0]:
                truth = [s.answers != (NEGATIVE,) for s in samples]
                if features is not None:
                    out["ruler"] = ruler_scores(ids, codes, truth, features)
                if cfg.calibrate:  # fitted on the model's own probabilities
                    present = [
                        1.0 - float(pr[list(o).index(NEGATIVE)]) for pr, o in zip(raw, options, strict=True)
                    ]
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
        logger.warning(
            "%s is a %s checkpoint: it was not trained to answer questions", cfg.checkpoint_dir, meta.stage
        )
    device = resolve_device(cfg.device, "EvalConfig.device")
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
    predictor = LlmPredictor(
        model, text_tokenizer, meta, indices, patients, cfg.batch_size, cfg.max_new_tokens, cfg.progress
    )
    ablated = None
    if cfg.ablation:
        folds = [ptbxl.entries[i].strat_fold or 0 for i in ecg_ids]  # 0: a training record of unknown fold
        source = ablation_permutation(ecg_ids, folds, cfg.seed)
        ablated = predictor.with_ecg_of(source)
    qa, reports, rows = evaluate_predictions(data, predictor, predictor, meta.prompt.report_question, ablated)
    findings = evaluate_findings(
        cfg, ptbxl, scp_table, data.answer_vocab, ecg_ids, predictor, ablated, features
    )
    results: dict[str, Any] = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "checkpoint_dir": str(cfg.checkpoint_dir),
        "data_dir": str(ptbxl_root),
        "folds": list(cfg.folds),
        "train_folds": list(cfg.train_folds),
        "config": cfg.to_dict(),
        "checkpoint": {
            "stage": meta.stage,
            "method": meta.method,
            "preset": meta.preset,
            "training_folds": {k: list(v) for k, v in recorded.items()},
        },
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

"""Scoring of ``diagecg eval``'s answers, torch-free: QA exact match beside the majority baselines and
the ECG ablation, per question group and per template, and the report metrics.

The answers come from prediction functions (:data:`PredictFn`); ``training.evaluate.LlmPredictor`` is
the PyTorch one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from diagecg.answers import format_answer, normalize_answer
from diagecg.datasets.ecgqa import AnswerVocabulary, QASample
from diagecg.question_templates import QuestionType
from diagecg.training.eval_data import EvalData
from diagecg.training.metrics import OVERALL, exact_match_by_type, majority_predictions, report_metrics

logger = logging.getLogger(__name__)

N_REPORT_EXAMPLES = 5
VERIFY_CHOOSE: tuple[str, ...] = tuple(t.value for t in QuestionType if t.closed)  # one answer each
VERIFY_CHOOSE_GROUP = "verify+choose"

# Each prediction function maps (ecg_ids, questions) to generated texts, in order.
PredictFn = Callable[[Sequence[int], Sequence[str]], list[str]]


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
    return {
        group: {"n": row["n"], **{name: scored[name][group]["accuracy"] for name in scored}}
        for group, row in first.items()
    }


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
        ``{"n", "valid_format", "groups", "by_template"}`` as in ``training.evaluate``'s docstring.
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
        groups[VERIFY_CHOOSE_GROUP] = _rows(
            [samples[k] for k in vc], {c: [p[k] for k in vc] for c, p in columns.items()}
        )[OVERALL]
    by_template: dict[str, dict[str, float]] = {}
    for tid in sorted({s.template_id for s in samples}):
        idx = [k for k, s in enumerate(samples) if s.template_id == tid]
        sub = [samples[k] for k in idx]
        by_template[str(tid)] = _rows(sub, {c: [p[k] for k in idx] for c, p in columns.items()})[OVERALL]
    valid = sum(_valid_format(s, p, vocab) for s, p in zip(samples, predictions, strict=True))
    return {
        "n": len(samples),
        "valid_format": valid / len(samples),
        "groups": groups,
        "by_template": by_template,
    }


def evaluate_predictions(
    data: EvalData,
    predict_qa: PredictFn,
    predict_report: PredictFn,
    report_question: str,
    predict_ablated: PredictFn | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None, list[dict[str, Any]]]:
    """Run the prediction functions over ``data`` and score them.

    Args:
        data: from ``training.eval_data.build_eval_data``.
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
        qa[wording] = score_qa(
            samples, preds, data.train_questions, data.answer_vocab, ablated, data.train_weights
        )
        for k, (s, p) in enumerate(zip(samples, preds, strict=True)):
            ref = format_answer(s.answers)
            rows.append(
                {
                    "task": "qa",
                    "wording": wording,
                    "ecg_id": s.ecg_id,
                    "template_id": s.template_id,
                    "question_type": s.question_type,
                    "attribute_type": s.attribute_type,
                    "question": s.question,
                    "reference": ref,
                    "prediction": p,
                    "correct": normalize_answer(p) == normalize_answer(ref),
                    "ablated_prediction": None if ablated is None else ablated[k],
                }
            )
    reports = None
    if data.reports:
        logger.info("reports: %d records", len(data.reports))
        ids = [i for i, _ in data.reports]
        refs = [r for _, r in data.reports]
        preds = predict_report(ids, [report_question] * len(ids))
        metrics = report_metrics(preds, refs)
        n = int(metrics.pop("n"))
        reports = {
            "n": n,
            "n_empty_reference": data.n_empty_reference,
            "metrics": metrics,
            "examples": [
                {"ecg_id": i, "reference": r, "prediction": p}
                for i, r, p in list(zip(ids, refs, preds, strict=True))[:N_REPORT_EXAMPLES]
            ],
        }
        for i, r, p in zip(ids, refs, preds, strict=True):
            rows.append(
                {
                    "task": "report",
                    "wording": None,
                    "ecg_id": i,
                    "template_id": None,
                    "question_type": None,
                    "attribute_type": None,
                    "question": report_question,
                    "reference": r,
                    "prediction": p,
                    "correct": None,
                    "ablated_prediction": None,
                }
            )
    return qa, reports, rows

"""Evaluation: exact-match QA accuracy with a majority baseline, and report-generation metrics.

QA answers are sets, written and read by :mod:`diagecg.answers` (torch-free, shared with the
runtime): a prediction is correct when :func:`~diagecg.answers.normalize_answer` of the generated
text equals the reference set, as in ECG-QA's exact-match accuracy (Oh et al. 2023).

Report metrics follow the DiagECG / HeartLLM evaluation (arXiv 2508.15338): corpus BLEU-1..4
(NLTK, uniform n-gram weights, no smoothing), METEOR (NLTK) and ROUGE-1/2/L F1 (``rouge-score``,
Porter stemming), on lower-cased text split into words and punctuation by a regular expression
(NLTK's punkt tokenizer would need a download). METEOR is computed without WordNet: NLTK's
synonym stage is given a stub whose ``synsets()`` is empty, so words match exactly or by Porter
stem only (nothing is downloaded; scores are slightly below METEOR with synonyms).
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diagecg.answers import format_answer, normalize_answer, parse_answer
from diagecg.datasets.ecgqa import QUESTION_TYPES, QASample

__all__ = [
    "ATTRIBUTE_PREFIX", "OVERALL", "exact_match_by_type", "format_answer", "format_table",
    "bootstrap_auc_intervals", "majority_baseline", "majority_predictions", "normalize_answer",
    "parse_answer", "report_metrics", "roc_auc", "tokenize_report", "weighted_roc_auc",
]

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:[-'/][a-z0-9]+)*|[^\sa-z0-9]")
OVERALL = "overall"
ATTRIBUTE_PREFIX = "attr/"


def _reference_set(sample: QASample) -> frozenset[str]:
    return normalize_answer(format_answer(sample.answers))


# --- QA accuracy ---------------------------------------------------------------------------


def _accumulate(samples: Sequence[QASample], correct: Sequence[bool]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[bool]] = {OVERALL: list(correct)}
    for s, ok in zip(samples, correct, strict=True):
        groups.setdefault(s.question_type, []).append(ok)
        groups.setdefault(ATTRIBUTE_PREFIX + s.attribute_type, []).append(ok)
    order = [OVERALL, *[q for q in QUESTION_TYPES if q in groups],
             *sorted(k for k in groups if k.startswith(ATTRIBUTE_PREFIX))]
    return {k: {"n": len(groups[k]), "accuracy": (sum(groups[k]) / len(groups[k])) if groups[k] else 0.0}
            for k in order}


def exact_match_by_type(
    samples: Sequence[QASample], predictions: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Exact-match accuracy of predicted answer sets.

    Args:
        samples: the questions with reference answers.
        predictions: generated answer text, one per sample.

    Returns:
        ``{"overall": {"n", "accuracy"}, "<question_type>": ..., "attr/<attribute_type>": ...}``.

    Raises:
        ValueError: the two lists differ in length.
    """
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} predictions")
    correct = [normalize_answer(p) == _reference_set(s) for s, p in zip(samples, predictions, strict=True)]
    return _accumulate(samples, correct)


def _majority(counter: Counter[str]) -> str:
    return min(counter.items(), key=lambda kv: (-kv[1], kv[0]))[0]  # ties broken alphabetically


def majority_predictions(
    train_samples: Sequence[QASample], test_samples: Sequence[QASample], by: str = "template",
    weights: Sequence[float] | None = None,
) -> list[str]:
    """The majority-baseline answer for each test sample, formatted with :func:`format_answer`.

    Args:
        train_samples: where the majorities are counted.
        test_samples: the questions to answer.
        by: ``"template"`` (majority answer set per template_id) or ``"question"`` (per
            template_id and attributes, falling back to the template's majority).
        weights: what each train sample counts (e.g. its record's ``PtbxlDataset.statement_weights``,
            so an enriched subset does not decide the majority); None = 1 each.

    Unseen templates fall back to the majority of the question type, then of all train samples.
    """
    if by not in ("template", "question"):
        raise ValueError(f"by must be 'template' or 'question', not {by!r}")
    if not train_samples:
        raise ValueError("majority baseline needs at least one train sample")
    if weights is not None and len(weights) != len(train_samples):
        raise ValueError(f"{len(weights)} weights for {len(train_samples)} train samples")
    per_question: dict[tuple[int, tuple[str, ...]], Counter[str]] = {}
    per_template: dict[int, Counter[str]] = {}
    per_type: dict[str, Counter[str]] = {}
    overall: Counter[str] = Counter()
    for k, s in enumerate(train_samples):
        a = format_answer(s.answers)
        w = 1.0 if weights is None else float(weights[k])
        per_question.setdefault((s.template_id, s.attributes), Counter())[a] += w  # type: ignore[assignment]
        per_template.setdefault(s.template_id, Counter())[a] += w  # type: ignore[assignment]
        per_type.setdefault(s.question_type, Counter())[a] += w  # type: ignore[assignment]
        overall[a] += w  # type: ignore[assignment]
    out = []
    for s in test_samples:
        if by == "question" and (s.template_id, s.attributes) in per_question:
            out.append(_majority(per_question[(s.template_id, s.attributes)]))
        elif s.template_id in per_template:
            out.append(_majority(per_template[s.template_id]))
        elif s.question_type in per_type:
            out.append(_majority(per_type[s.question_type]))
        else:
            out.append(_majority(overall))
    return out


def majority_baseline(
    train_samples: Sequence[QASample], test_samples: Sequence[QASample], by: str = "template"
) -> dict[str, dict[str, float]]:
    """Exact-match accuracy of :func:`majority_predictions` (same shape as :func:`exact_match_by_type`)."""
    return exact_match_by_type(test_samples, majority_predictions(train_samples, test_samples, by=by))


def format_table(
    results: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]] | None = None
) -> str:
    """A plain-text table of accuracy per group, with the baseline beside it when given."""
    header = f"{'group':<28} {'n':>6} {'accuracy':>9}" + (f" {'baseline':>9}" if baseline else "")
    lines = [header, "-" * len(header)]
    for key, row in results.items():
        line = f"{key:<28} {int(row['n']):>6} {row['accuracy']:>9.3f}"
        if baseline:
            b = baseline.get(key)
            line += f" {b['accuracy']:>9.3f}" if b else f" {'-':>9}"
        lines.append(line)
    return "\n".join(lines)


# --- report metrics ------------------------------------------------------------------------


def tokenize_report(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens (``"st/t"`` and ``"t-wave"`` stay one token)."""
    return _TOKEN_RE.findall(text.lower())


class _NoWordNet:
    """Stands in for ``nltk.corpus.wordnet`` so METEOR needs no download: no synonyms at all."""

    def synsets(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []


def report_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """BLEU-1..4, METEOR and ROUGE-1/2/L F1 of generated reports against one reference each.

    Args:
        predictions: generated reports.
        references: reference reports, same order.

    Returns:
        ``{"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge1", "rouge2", "rougeL", "n"}``;
        BLEU is corpus-level, METEOR and ROUGE are means over pairs. All in [0, 1].

    Raises:
        ValueError: lengths differ or the lists are empty.
    """
    from nltk.stem.porter import PorterStemmer
    from nltk.translate.bleu_score import corpus_bleu
    from nltk.translate.meteor_score import meteor_score
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("report_metrics needs at least one prediction")
    hyps = [tokenize_report(p) for p in predictions]
    refs = [tokenize_report(r) for r in references]
    out: dict[str, float] = {}
    for n in range(1, 5):
        weights = tuple([1.0 / n] * n)
        with warnings.catch_warnings():  # NLTK warns on every zero n-gram overlap; 0.0 is the answer
            warnings.filterwarnings("ignore", r"\s*The hypothesis contains 0 counts", UserWarning)
            out[f"bleu{n}"] = float(corpus_bleu([[r] for r in refs], hyps, weights=weights))
    stemmer, wordnet = PorterStemmer(), _NoWordNet()
    meteors = [
        meteor_score([r], h, stemmer=stemmer, wordnet=wordnet) if h and r else 0.0
        for h, r in zip(hyps, refs, strict=True)
    ]
    out["meteor"] = sum(meteors) / len(meteors)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for p, r in zip(predictions, references, strict=True):
        scores = scorer.score(r, p)
        for k in sums:
            sums[k] += scores[k].fmeasure
    out.update({k: v / len(predictions) for k, v in sums.items()})
    out["n"] = float(len(predictions))
    return out


def roc_auc(labels: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied scores counted half); NaN unless both
    classes are present. ``labels`` are 0/1, ``scores`` any monotone confidence of class 1."""
    y = np.asarray(labels, dtype=float) > 0.5
    s = np.asarray(scores, dtype=float)
    assert y.shape == s.shape and y.ndim == 1, f"labels {y.shape} and scores {s.shape} must be equal 1-D"
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    # average rank of each run of tied scores
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    for a, b in zip(starts, ends, strict=True):
        ranks[order[a:b]] = (a + b + 1) / 2  # ranks a+1..b averaged
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _tie_groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order that sorts ``scores``, tie-group id of each sorted position)."""
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    groups = np.cumsum(np.r_[False, s[1:] != s[:-1]])
    return order, groups


def _grouped_auc(y_sorted: np.ndarray, w_sorted: np.ndarray, groups: np.ndarray) -> float:
    """Weighted Mann-Whitney AUC over presorted samples (ties count half)."""
    wp = np.bincount(groups, weights=w_sorted * y_sorted)
    wn = np.bincount(groups, weights=w_sorted * ~y_sorted)
    total_p, total_n = wp.sum(), wn.sum()
    if total_p <= 0 or total_n <= 0:
        return math.nan
    below = np.cumsum(wn) - wn  # negative weight strictly below each tie group
    return float((wp * (below + 0.5 * wn)).sum() / (total_p * total_n))


def weighted_roc_auc(labels: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray,
                     weights: Sequence[float] | np.ndarray | None = None) -> float:
    """Area under the ROC curve with each sample counted ``weights`` times (:func:`roc_auc` when
    all weights are 1); NaN unless both classes have weight. Importance weights
    (``PtbxlDataset.statement_weights``) give the AUC of the population the weights stand for."""
    y = np.asarray(labels, dtype=float) > 0.5
    s = np.asarray(scores, dtype=float)
    w = np.ones(len(s)) if weights is None else np.asarray(weights, dtype=float)
    assert y.shape == s.shape == w.shape and y.ndim == 1, (
        f"labels {y.shape}, scores {s.shape} and weights {w.shape} must be equal 1-D")
    order, groups = _tie_groups(s)
    return _grouped_auc(y[order], w[order], groups)


def bootstrap_auc_intervals(
    rows: Mapping[str, tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray,
                             Sequence[int] | np.ndarray]],
    groups: Mapping[str, Sequence[str]] | None = None,
    weights: Mapping[str, Sequence[float] | np.ndarray] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of AUCs and of their macro means, resampling records.

    Every draw resamples the records (``clusters``: the ecg_id of each sample) with replacement,
    jointly for all rows, so a record asked about several findings moves them together and the
    interval of a macro mean sees their correlation.

    Args:
        rows: name -> (0/1 labels, scores, cluster id of each sample).
        groups: macro name -> the row names averaged (NaN AUCs left out of a draw's mean).
        weights: name -> importance weight of each sample (:func:`weighted_roc_auc`); None = 1.
        n_boot: bootstrap draws.
        level: coverage of the interval (0.95: the 2.5th and 97.5th percentiles).
        seed: the draws' seed.

    Returns:
        name (row or group) -> (low, high); (NaN, NaN) where no draw had both classes.
    """
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"n_boot={n_boot} must be >= 1 and level={level} in (0, 1)")
    names = list(rows)
    all_clusters = np.unique(np.concatenate([np.asarray(r[2], dtype=np.int64) for r in rows.values()]
                                            or [np.zeros(0, np.int64)]))
    prepared = []
    for name in names:
        y, s, c = (np.asarray(v) for v in rows[name])
        w = np.ones(len(s)) if weights is None or name not in weights else np.asarray(weights[name], float)
        order, tie = _tie_groups(s.astype(float))
        prepared.append(((y.astype(float) > 0.5)[order], w[order], tie,
                         np.searchsorted(all_clusters, c.astype(np.int64))[order]))
    rng = np.random.default_rng(seed)
    draws = np.full((n_boot, len(names)), math.nan)
    for b in range(n_boot):
        n_clusters = len(all_clusters)
        counts = np.bincount(rng.integers(0, n_clusters, n_clusters), minlength=n_clusters)  # (clusters,)
        for k, (y_s, w_s, tie, cl) in enumerate(prepared):
            draws[b, k] = _grouped_auc(y_s, w_s * counts[cl], tie)
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2

    def interval(values: np.ndarray) -> tuple[float, float]:
        v = values[~np.isnan(values)]
        if not len(v):
            return math.nan, math.nan
        return float(np.percentile(v, lo_q)), float(np.percentile(v, hi_q))

    out = {name: interval(draws[:, k]) for k, name in enumerate(names)}
    for group, members in (groups or {}).items():
        cols = [names.index(m) for m in members if m in rows]
        if not cols:
            out[group] = (math.nan, math.nan)
            continue
        sub = draws[:, cols]
        known = ~np.isnan(sub)
        mean_known = np.nansum(sub, axis=1) / np.maximum(known.sum(axis=1), 1)
        means = np.where(known.any(axis=1), mean_known, math.nan)
        out[group] = interval(means)
    return out


def calibration(outcomes: Sequence[float] | np.ndarray, probs: Sequence[float] | np.ndarray,
                n_bins: int = 10, weights: Sequence[float] | np.ndarray | None = None) -> dict[str, Any]:
    """Reliability table and expected calibration error (ECE) of probabilities against 0/1 outcomes.

    Predictions fall into ``n_bins`` equal-width bins of ``probs`` over [0, 1] (1.0 in the last).
    ECE = sum over bins of (bin share) * |mean probability - observed frequency|: 0 for a perfectly
    calibrated predictor. With ``weights`` (importance weights of the predictions) every share, mean
    and frequency is weighted; ``n`` stays the count.

    Returns:
        ``{"ece", "n", "bins": [{"lo", "hi", "n", "mean_prob", "observed"}]}`` (empty bins left out);
        ``ece`` is NaN when there are no predictions.
    """
    y = np.asarray(outcomes, dtype=float)
    p = np.asarray(probs, dtype=float)
    w = np.ones(len(p)) if weights is None else np.asarray(weights, dtype=float)
    assert y.shape == p.shape == w.shape and y.ndim == 1, (
        f"outcomes {y.shape}, probs {p.shape} and weights {w.shape} must be equal 1-D")
    if n_bins < 1:
        raise ValueError(f"n_bins={n_bins} is invalid: must be >= 1")
    if p.size and (np.nanmin(p) < 0 or np.nanmax(p) > 1 or np.isnan(p).any()):
        raise ValueError("probabilities must lie in [0, 1]")
    which = np.minimum((p * n_bins).astype(int), n_bins - 1)
    bins, ece = [], 0.0
    total = w.sum()
    for b in range(n_bins):
        inside = which == b
        n = int(inside.sum())
        if not n or w[inside].sum() <= 0:
            continue
        wb = w[inside]
        mean_p, observed = float(np.average(p[inside], weights=wb)), float(np.average(y[inside], weights=wb))
        ece += wb.sum() / total * abs(mean_p - observed)
        bins.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "n": n, "mean_prob": mean_p,
                     "observed": observed})
    return {"ece": float(ece) if len(p) else math.nan, "n": int(len(p)), "bins": bins}


def format_calibration(table: dict[str, Any], title: str) -> list[str]:
    """Lines of a reliability table (:func:`calibration`)."""
    lines = [f"{title}: ECE {table['ece']:.3f} over {table['n']} answers",
             f"{'p bin':<11} {'n':>6} {'mean p':>7} {'observed':>9}"]
    lines += [f"{b['lo']:.1f}-{b['hi']:.1f}    {b['n']:>6} {b['mean_prob']:>7.3f} {b['observed']:>9.3f}"
              for b in table["bins"]]
    return lines

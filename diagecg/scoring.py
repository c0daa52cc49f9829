"""Scoring answers against labels (torch-free): AUC with bootstrap intervals, sensitivity, specificity,
balanced accuracy, reliability tables (ECE), the ECG ablation's record permutation, and the ruler (the
AUC of one defining measurement, ``diagecg.criteria``).

One implementation for every place that scores: ``diagecg eval`` (the PyTorch checkpoint),
``bench/ecg_dependence.py`` and ``diagecg validate`` (the exported bundle through the runtime), so their
numbers agree on the same answers.

Per-finding verify metrics (:func:`score_findings`):

* ``auc``: area under the ROC curve of ``p(present) = 1 - p(no)``; a record is positive when it shows
  the finding;
* ``sensitivity`` / ``specificity`` / ``balanced_accuracy`` of the answer: the most probable option
  (read as positive unless it is ``no``), or a calibrated decision when given;
* ``auc_ci95``: the 95% percentile bootstrap interval of the AUC, records resampled (jointly for all
  findings, so the macro means get intervals too).

The **ECG ablation** asks the same questions with each record's ECG replaced by another record's
(:func:`ablation_permutation`: a seeded derangement; patient features unchanged). A model that reads the
ECG loses accuracy under it; one that answers from the question and the patient alone does not.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diagecg.criteria import criterion_for, criterion_score
from diagecg.datasets.ecgqa import QASample
from diagecg.datasets.ptbxl import SUPERCLASSES

__all__ = [
    "NEGATIVE",
    "ablation_permutation",
    "auc_interval",
    "bootstrap_auc_intervals",
    "calibration",
    "format_calibration",
    "roc_auc",
    "ruler_scores",
    "score_findings",
    "weighted_roc_auc",
]

NEGATIVE = "no"


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


def weighted_roc_auc(
    labels: Sequence[float] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    weights: Sequence[float] | np.ndarray | None = None,
) -> float:
    """Area under the ROC curve with each sample counted ``weights`` times (:func:`roc_auc` when
    all weights are 1); NaN unless both classes have weight. Importance weights
    (``PtbxlDataset.statement_weights``) give the AUC of the population the weights stand for."""
    y = np.asarray(labels, dtype=float) > 0.5
    s = np.asarray(scores, dtype=float)
    w = np.ones(len(s)) if weights is None else np.asarray(weights, dtype=float)
    assert y.shape == s.shape == w.shape and y.ndim == 1, (
        f"labels {y.shape}, scores {s.shape} and weights {w.shape} must be equal 1-D"
    )
    order, groups = _tie_groups(s)
    return _grouped_auc(y[order], w[order], groups)


def bootstrap_auc_intervals(
    rows: Mapping[
        str, tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray, Sequence[int] | np.ndarray]
    ],
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
    all_clusters = np.unique(
        np.concatenate([np.asarray(r[2], dtype=np.int64) for r in rows.values()] or [np.zeros(0, np.int64)])
    )
    prepared = []
    for name in names:
        y, s, c = (np.asarray(v) for v in rows[name])
        w = np.ones(len(s)) if weights is None or name not in weights else np.asarray(weights[name], float)
        order, tie = _tie_groups(s.astype(float))
        prepared.append(
            (
                (y.astype(float) > 0.5)[order],
                w[order],
                tie,
                np.searchsorted(all_clusters, c.astype(np.int64))[order],
            )
        )
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


def calibration(
    outcomes: Sequence[float] | np.ndarray,
    probs: Sequence[float] | np.ndarray,
    n_bins: int = 10,
    weights: Sequence[float] | np.ndarray | None = None,
) -> dict[str, Any]:
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
        f"outcomes {y.shape}, probs {p.shape} and weights {w.shape} must be equal 1-D"
    )
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
        bins.append(
            {"lo": b / n_bins, "hi": (b + 1) / n_bins, "n": n, "mean_prob": mean_p, "observed": observed}
        )
    return {"ece": float(ece) if len(p) else math.nan, "n": int(len(p)), "bins": bins}


def format_calibration(table: dict[str, Any], title: str) -> list[str]:
    """Lines of a reliability table (:func:`calibration`)."""
    lines = [
        f"{title}: ECE {table['ece']:.3f} over {table['n']} answers",
        f"{'p bin':<11} {'n':>6} {'mean p':>7} {'observed':>9}",
    ]
    lines += [
        f"{b['lo']:.1f}-{b['hi']:.1f}    {b['n']:>6} {b['mean_prob']:>7.3f} {b['observed']:>9.3f}"
        for b in table["bins"]
    ]
    return lines


def ablation_permutation(ecg_ids: Sequence[int], folds: Sequence[int], seed: int) -> dict[int, int]:
    """ecg_id -> the ecg_id whose ECG replaces it: a seeded derangement within each fold (no record
    keeps its own ECG; a fold with a single record keeps it)."""
    out: dict[int, int] = {}
    by_fold: dict[int, list[int]] = {}
    for i, f in zip(ecg_ids, folds, strict=True):
        by_fold.setdefault(f, []).append(i)
    rng = random.Random(f"ecg-ablation-{seed}")
    for fold in sorted(by_fold):
        ids = by_fold[fold]
        if len(ids) == 1:
            out[ids[0]] = ids[0]
            continue
        order = ids[:]
        rng.shuffle(order)
        for k, i in enumerate(order):  # a cycle through the shuffled order: nobody maps to itself
            out[i] = order[(k + 1) % len(order)]
    return out


def _rates(truth: np.ndarray, called: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    pos, neg = (w * truth).sum(), (w * ~truth).sum()
    sens = float((w * (called & truth)).sum() / pos) if pos > 0 else math.nan
    spec = float((w * (~called & ~truth)).sum() / neg) if neg > 0 else math.nan
    return sens, spec


def score_findings(
    samples: Sequence[QASample],
    codes: Sequence[str],
    probs: Sequence[np.ndarray],
    options: Sequence[Sequence[str]],
    min_positives: int,
    weights: Sequence[float] | None = None,
    n_bootstrap: int = 0,
    seed: int = 0,
    calls: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """Per-finding AUC (with a bootstrap interval), sensitivity, specificity and balanced accuracy,
    and their macro means.

    Args:
        samples: the verify questions (one per record and finding).
        codes: each sample's finding code.
        probs: each sample's option probabilities (:func:`option_probabilities`).
        options: each sample's option texts, in the order of ``probs``.
        min_positives: findings with fewer positives are reported but left out of the macro means.
        weights: importance weight of each sample (:func:`finding_sample_weights`) for every metric and
            the calibration tables; None = 1 each. ``n`` and ``n_pos`` stay counts.
        n_bootstrap: bootstrap draws of the 95% intervals (records resampled); 0 = no intervals.
        seed: the bootstrap's seed.
        calls: each sample's yes/no decision when it is not the most probable option (a calibrated
            threshold, ``diagecg.calibration``); None = the most probable option.

    Returns:
        ``{"per_finding": {code: {"name", "n", "n_pos", "auc", "auc_ci95", "sensitivity", "specificity",
        "balanced_accuracy"}}, "calibration": {"presence", "answer"}`` (reliability tables of
        ``diagecg.training.metrics.calibration`` over every question) and ``"macro": {"superclass_auc",
        "superclass_auc_ci95", "superclass_balanced_accuracy", "statement_auc", "statement_auc_ci95",
        "statement_balanced_accuracy", "n_superclasses", "n_statements"}}``; an interval is ``[low,
        high]``, or None without bootstrap.
    """
    rows: dict[str, dict[str, list[Any]]] = {}
    sample_w = [1.0] * len(samples) if weights is None else [float(w) for w in weights]
    assert len(sample_w) == len(samples), f"{len(sample_w)} weights for {len(samples)} samples"
    decided = [None] * len(samples) if calls is None else list(calls)
    for s, c, p, opts, w, call in zip(samples, codes, probs, options, sample_w, decided, strict=True):
        neg = list(opts).index(NEGATIVE)
        r = rows.setdefault(
            c, {"truth": [], "score": [], "called": [], "name": [s.attributes[0]], "w": [], "ecg_id": []}
        )
        r["truth"].append(s.answers != (NEGATIVE,))
        r["score"].append(1.0 - float(p[neg]))
        r["called"].append(int(np.argmax(p)) != neg if call is None else bool(call))
        r["w"].append(w)
        r["ecg_id"].append(s.ecg_id)
    # reliability of p(present) as the probability that the finding is there, and of the answer's
    # confidence of the positive/negative call (p(present) or 1 - p(present)) as the probability that
    # the call is right
    truth = np.concatenate([r["truth"] for r in rows.values()]) if rows else np.zeros(0, bool)
    present = np.concatenate([r["score"] for r in rows.values()]) if rows else np.zeros(0)
    called = np.concatenate([r["called"] for r in rows.values()]) if rows else np.zeros(0, bool)
    w_all = np.concatenate([r["w"] for r in rows.values()]) if rows else np.zeros(0)
    confidence = np.where(called, present, 1.0 - present)
    reliability = {
        "presence": calibration(truth, np.clip(present, 0.0, 1.0), weights=w_all),
        "answer": calibration(called == truth, np.clip(confidence, 0.0, 1.0), weights=w_all),
    }
    per: dict[str, dict[str, Any]] = {}
    for c, r in rows.items():
        truth, called, row_w = np.array(r["truth"]), np.array(r["called"]), np.array(r["w"])
        sens, spec = _rates(truth, called, row_w)
        per[c] = {
            "name": r["name"][0],
            "n": len(truth),
            "n_pos": int(truth.sum()),
            "auc": weighted_roc_auc(truth, r["score"], row_w),
            "auc_ci95": None,
            "sensitivity": sens,
            "specificity": spec,
            "balanced_accuracy": (sens + spec) / 2,
        }

    def macro(keys: list[str], metric: str) -> float:
        vals = [per[k][metric] for k in keys if not math.isnan(per[k][metric])]
        return float(np.mean(vals)) if vals else math.nan

    sup = [c for c in per if c in SUPERCLASSES]
    stm = [c for c in per if c not in SUPERCLASSES and per[c]["n_pos"] >= min_positives]
    intervals: dict[str, list[float] | None] = {"superclass": None, "statement": None}
    if n_bootstrap > 0 and rows:
        ci = bootstrap_auc_intervals(
            {c: (r["truth"], r["score"], r["ecg_id"]) for c, r in rows.items()},
            groups={"superclass": sup, "statement": stm},
            weights={c: r["w"] for c, r in rows.items()},
            n_boot=n_bootstrap,
            seed=seed,
        )
        for c in per:
            per[c]["auc_ci95"] = list(ci[c])
        intervals = {"superclass": list(ci["superclass"]), "statement": list(ci["statement"])}
    return {
        "per_finding": per,
        "calibration": reliability,
        "macro": {
            "superclass_auc": macro(sup, "auc"),
            "superclass_auc_ci95": intervals["superclass"],
            "superclass_balanced_accuracy": macro(sup, "balanced_accuracy"),
            "statement_auc": macro(stm, "auc"),
            "statement_auc_ci95": intervals["statement"],
            "statement_balanced_accuracy": macro(stm, "balanced_accuracy"),
            "n_superclasses": len(sup),
            "n_statements": len(stm),
        },
    }


def auc_interval(
    truth: np.ndarray, score: np.ndarray, n_boot: int = 500, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC (records resampled with replacement); NaN without
    positives and negatives."""
    truth, score = np.asarray(truth, bool), np.asarray(score, float)
    if truth.all() or not truth.any():
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        k = rng.integers(0, len(truth), len(truth))
        t = truth[k]
        if t.all() or not t.any():
            continue
        vals.append(roc_auc(t, score[k]))
    lo, hi = np.percentile(vals, [50 * (1 - level), 100 - 50 * (1 - level)])
    return float(lo), float(hi)


def ruler_scores(
    ecg_ids: Sequence[int],
    codes: Sequence[str],
    truth: Sequence[bool],
    features: Mapping[int, np.ndarray],
    n_boot: int = 500,
) -> dict[str, dict[str, Any]]:
    """The measurement-alone baseline of each finding that has a defining measurement.

    Args:
        ecg_ids, codes, truth: one entry per (record, finding) question, as scored for the model.
        features: ecg_id -> float32 (len(diagecg.features.FEATURE_NAMES),) of the record's window.

    Returns:
        ``{code: {"feature", "direction", "cutoff", "n", "n_pos", "auc", "auc_ci"}}``.
    """
    out: dict[str, dict[str, Any]] = {}
    for code in dict.fromkeys(codes):
        crit = criterion_for(code)
        if crit is None:
            continue
        rows = [(i, t) for i, c, t in zip(ecg_ids, codes, truth, strict=True) if c == code and i in features]
        if not rows:
            continue
        t = np.array([r[1] for r in rows], bool)
        score = criterion_score(crit, np.stack([features[r[0]] for r in rows]))
        out[code] = {
            "feature": crit.feature,
            "direction": crit.direction,
            "cutoff": crit.cutoff,
            "n": len(t),
            "n_pos": int(t.sum()),
            "auc": roc_auc(t, score),
            "auc_ci": list(auc_interval(t, score, n_boot)),
        }
    return out

"""The ruler and the calibration of the per-finding answers (torch-free).

**Ruler.** For every finding with a defining measurement (``diagecg.criteria``), the AUC of that one
number, computed by ``diagecg.measure`` on the same records, beside the model's: a model that reads
the ECG should never be worse than its own measurement. Intervals are percentile bootstraps over
records.

**Calibration.** The verify answers are trained on class-balanced questions, so their p(present)
overstates rare findings. Per finding, a logistic map of the logit of p(present) (Platt scaling,
fitted on a validation fold, with importance weights where the validation records over-represent a
finding) turns it into a probability of presence, and a threshold on that probability, chosen to
maximise balanced accuracy on the same fold, is the decision rule: the answer is ``yes`` when the
calibrated probability reaches it. Both are written into the bundle manifest and applied by the
runtime.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diagecg.calibration import logit, platt, sigmoid
from diagecg.criteria import criterion_for, criterion_score
from diagecg.training.metrics import roc_auc

__all__ = ["auc_interval", "fit_calibration", "fit_platt", "ruler_scores"]



def auc_interval(truth: np.ndarray, score: np.ndarray, n_boot: int = 500, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
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


def ruler_scores(ecg_ids: Sequence[int], codes: Sequence[str], truth: Sequence[bool],
                 features: Mapping[int, np.ndarray], n_boot: int = 500) -> dict[str, dict[str, Any]]:
    """The measurement-alone baseline of each finding that has a defining measurement.

    Args:
        ecg_ids, codes, truth: one entry per (record, finding) question, as scored for the model.
        features: ecg_id -> float32 (len(diagecg.measure.FEATURE_NAMES),) of the record's window.

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
        out[code] = {"feature": crit.feature, "direction": crit.direction, "cutoff": crit.cutoff,
                     "n": len(t), "n_pos": int(t.sum()), "auc": roc_auc(t, score),
                     "auc_ci": list(auc_interval(t, score, n_boot))}
    return out


def fit_platt(p: np.ndarray, truth: np.ndarray, weights: np.ndarray | None = None,
              l2: float = 1e-3, iters: int = 50) -> tuple[float, float]:
    """``(a, b)`` of ``sigmoid(a * logit(p) + b)``: weighted logistic regression by Newton's method
    (a small ridge keeps it finite on separable data)."""
    x = logit(p)
    y = np.asarray(truth, float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, float)
    X = np.stack([x, np.ones_like(x)], axis=1)
    theta = np.array([1.0, 0.0])
    for _ in range(iters):
        q = sigmoid(X @ theta)
        grad = X.T @ (w * (q - y)) + l2 * theta
        hess = (X * (w * q * (1 - q))[:, None]).T @ X + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta = theta - step
        if np.abs(step).max() < 1e-8:
            break
    return float(theta[0]), float(theta[1])


def _best_threshold(q: np.ndarray, truth: np.ndarray, w: np.ndarray) -> float:
    """The threshold on ``q`` with the largest weighted balanced accuracy (midpoints of sorted values)."""
    order = np.unique(q)
    if order.size < 2:
        return 0.5
    cands = np.concatenate([[0.0], (order[1:] + order[:-1]) / 2, [1.0]])
    pos, neg = w[truth].sum(), w[~truth].sum()
    best, best_t = -1.0, 0.5
    for t in cands:
        called = q >= t
        bal = (w[called & truth].sum() / pos + w[~called & ~truth].sum() / neg) / 2
        if bal > best + 1e-12:
            best, best_t = bal, float(t)
    return best_t


def fit_calibration(codes: Sequence[str], p_present: Sequence[float], truth: Sequence[bool],
                    weights: Sequence[float] | None = None, min_positives: int = 5
                    ) -> dict[str, dict[str, Any]]:
    """Per-finding Platt map and decision threshold, fitted on validation answers.

    Args:
        codes, p_present, truth: one entry per (record, finding) verify question.
        weights: importance weight of each question's record (prevalence correction); None = 1.
        min_positives: findings with fewer positives (or negatives) are not calibrated.

    Returns:
        ``{code: {"a", "b", "threshold", "n", "n_pos"}}``.
    """
    codes_a = np.asarray(codes)
    p = np.asarray(p_present, float)
    t = np.asarray(truth, bool)
    w = np.ones_like(p) if weights is None else np.asarray(weights, float)
    out: dict[str, dict[str, Any]] = {}
    for code in dict.fromkeys(codes):
        m = codes_a == code
        n_pos, n_neg = int(t[m].sum()), int((~t[m]).sum())
        if n_pos < min_positives or n_neg < min_positives:
            continue
        a, b = fit_platt(p[m], t[m], w[m])
        q = platt(p[m], a, b)
        threshold = _best_threshold(q, t[m], w[m])
        out[code] = {"a": round(a, 5), "b": round(b, 5), "threshold": round(threshold, 5),
                     "n": int(m.sum()), "n_pos": n_pos}
    return out

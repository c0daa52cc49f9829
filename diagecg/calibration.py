"""A verify answer under a finding's calibration: one rule for fitting, for the runtime and for
``diagecg eval`` / ``diagecg validate`` (torch-free).

The verify answers are trained on class-balanced questions, so their p(present) overstates rare
findings. Per finding, a logistic map of the logit of p(present) (Platt scaling, ``a``, ``b``: fitted by
:func:`fit_calibration` on a validation fold or a site's own labelled records, with importance weights
where those over-represent a finding) turns it into a probability of presence, and a threshold on
that probability (``threshold``), chosen to maximise balanced accuracy on the same records, is the
decision rule: the answer is ``yes`` when the calibrated probability reaches it. A bundle's manifest
holds them per finding. :func:`calibrate_options` applies it to one verify
question's option probabilities; the held-out evaluation applies the same function, so the
sensitivity, specificity and PPV a bundle reports are those of the rule its runtime answers with.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "P_EPS",
    "calibrate_options",
    "calibration_identity",
    "fit_calibration",
    "fit_platt",
    "logit",
    "parse_rule",
    "platt",
    "read_calibration_results",
    "sigmoid",
]

P_EPS = 1e-4  # p(present) is clipped to [P_EPS, 1 - P_EPS] before its logit (fit and use alike)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, without overflow for large ``|z|``."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` of ``p`` clipped to ``[P_EPS, 1 - P_EPS]`` (fit and use alike)."""
    q = np.clip(np.asarray(p, dtype=np.float64), P_EPS, 1 - P_EPS)
    return np.log(q / (1 - q))


def platt(p: np.ndarray, a: float, b: float) -> np.ndarray:
    """The calibrated probability of presence ``sigmoid(a * logit(p) + b)`` of p(present) ``p``."""
    return sigmoid(a * logit(p) + b)


def read_calibration_results(path: Path, tested_folds: Collection[int]) -> dict[str, dict[str, Any]]:
    """Finding name -> calibration of a ``diagecg eval --set calibrate=true`` results file.

    Raises:
        ValueError: it was fitted on one of ``tested_folds``, or holds no calibration.
    """
    results = json.loads(Path(path).read_text())
    overlap = sorted(set(results.get("folds") or []) & set(tested_folds))
    if overlap:
        raise ValueError(f"{path} was fitted on folds {overlap}, which the evaluation tests on")
    fitted = (results.get("findings") or {}).get("calibration") or {}
    if not fitted:
        raise ValueError(f"{path} holds no calibration: write it with diagecg eval --set calibrate=true")
    return dict(fitted)


def calibrate_options(probs: np.ndarray, negative: int, cal: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    """A verify answer under its finding's calibration.

    p(present) = 1 - p(negative option) becomes ``q = platt(p, a, b)``, the probability of presence
    measured on the calibration fold; the positive options share ``q`` in their model proportions and
    the negative one gets ``1 - q``. The answer is the most probable positive option when ``q``
    reaches the finding's threshold (chosen on the calibration fold for balanced accuracy), else the
    negative one.

    Returns:
        The new probabilities (float64, same order) and the answer's index.
    """
    p = np.asarray(probs, dtype=np.float64)
    q = float(platt(np.asarray(1.0 - p[negative]), float(cal["a"]), float(cal["b"])))
    mass = float(np.delete(p, negative).sum())  # not 1 - p[negative]: that rounds tiny masses to 0
    out = p * (q / mass) if mass > 0 else np.full_like(p, q / max(1, len(p) - 1))
    out[negative] = 1.0 - q
    positives = [k for k in range(len(p)) if k != negative]
    best = max(positives, key=lambda k: out[k]) if q >= float(cal["threshold"]) else negative
    return out, best


def fit_platt(
    p: np.ndarray, truth: np.ndarray, weights: np.ndarray | None = None, l2: float = 1e-3, iters: int = 50
) -> tuple[float, float]:
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


def _threshold_for_sensitivity(q: np.ndarray, truth: np.ndarray, w: np.ndarray, target: float) -> float:
    """The highest threshold on ``q`` whose weighted sensitivity reaches ``target`` (most specific)."""
    pos = np.sort(q[truth])[::-1]
    pw = w[truth][np.argsort(q[truth])[::-1]]
    if not pos.size:
        return 0.5
    reached = np.cumsum(pw) / pw.sum() >= target - 1e-12
    return float(pos[int(np.argmax(reached))])


def parse_rule(rule: str) -> tuple[str, float | None]:
    """``"balanced"`` or ``"sensitivity:0.9"`` -> (kind, target).

    Raises:
        ValueError: any other rule.
    """
    if rule == "balanced":
        return "balanced", None
    kind, _, value = rule.partition(":")
    try:
        target = float(value)
    except ValueError:
        target = math.nan
    if kind != "sensitivity" or not 0 < target <= 1:
        raise ValueError(
            f"decision rule {rule!r}: use 'balanced' (best balanced accuracy) or "
            f"'sensitivity:T' (the most specific threshold with sensitivity >= T, 0 < T <= 1)"
        )
    return kind, target


def calibration_identity(section: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Which calibration a bundle's answers follow: where it was fitted, when, and the sha256 of its
    manifest section (canonical JSON); None without one."""
    if not section or not section.get("findings"):
        return None
    fitted = section.get("fitted_on") or {}
    if fitted.get("source"):
        source = str(fitted["source"])
    elif fitted.get("folds"):
        source = f"PTB-XL fold {', '.join(map(str, fitted['folds']))}"
    else:
        source = "unknown"
    canonical = json.dumps(section, sort_keys=True, separators=(",", ":")).encode()
    return {
        "source": source,
        "created_utc": section.get("created_utc"),
        "sha256": hashlib.sha256(canonical).hexdigest(),
    }


def fit_calibration(
    codes: Sequence[str],
    p_present: Sequence[float],
    truth: Sequence[bool],
    weights: Sequence[float] | None = None,
    min_positives: int = 5,
    rule: str = "balanced",
) -> dict[str, dict[str, Any]]:
    """Per-finding Platt map and decision threshold, fitted on validation answers.

    Args:
        codes, p_present, truth: one entry per (record, finding) verify question.
        weights: importance weight of each question's record (prevalence correction); None = 1.
        min_positives: findings with fewer positives (or negatives) are not calibrated.
        rule: how the threshold is chosen (:func:`parse_rule`): ``"balanced"`` for the best balanced
            accuracy, ``"sensitivity:0.9"`` for the most specific threshold that finds 90% of positives.

    Returns:
        ``{code: {"a", "b", "threshold", "n", "n_pos"}}``.
    """
    _, target = parse_rule(rule)
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
        threshold = (
            _best_threshold(q, t[m], w[m])
            if target is None
            else _threshold_for_sensitivity(q, t[m], w[m], target)
        )
        # rounded down: a positive at the threshold stays at or above it
        out[code] = {
            "a": round(a, 5),
            "b": round(b, 5),
            "threshold": math.floor(threshold * 1e5) / 1e5,
            "n": int(m.sum()),
            "n_pos": n_pos,
        }
    return out

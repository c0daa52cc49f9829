"""A verify answer under a finding's calibration: one rule for the runtime and for ``diagecg eval``.

A bundle's manifest may hold, per finding, a logistic map of the model's p(present) (Platt scaling:
``a``, ``b``) and a threshold on the mapped probability (``threshold``), fitted on a validation fold by
``diagecg.training.ruler.fit_calibration``. :func:`calibrate_options` applies it to one verify
question's option probabilities; the held-out evaluation applies the same function, so the
sensitivity, specificity and PPV a bundle reports are those of the rule its runtime answers with.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["P_EPS", "calibrate_options", "logit", "platt", "read_calibration_results", "sigmoid"]

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

"""A verify answer under a finding's calibration: one rule for the runtime and for ``diagecg eval``.

A bundle's manifest may hold, per finding, a logistic map of the model's p(present) (Platt scaling:
``a``, ``b``) and a threshold on the mapped probability (``threshold``), fitted on a validation fold by
``diagecg.training.ruler.fit_calibration``. :func:`calibrate_options` applies it to one verify
question's option probabilities; the held-out evaluation applies the same function, so the
sensitivity, specificity and PPV a bundle reports are those of the rule its runtime answers with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["P_EPS", "calibrate_options", "platt"]

P_EPS = 1e-4  # p(present) is clipped to [P_EPS, 1 - P_EPS] before its logit (fit and use alike)


def platt(p: float, a: float, b: float) -> float:
    """``sigmoid(a * logit(p) + b)``, with ``p`` clipped to ``[P_EPS, 1 - P_EPS]``."""
    p = min(max(float(p), P_EPS), 1 - P_EPS)
    return 0.5 * (1.0 + math.tanh(0.5 * (a * math.log(p / (1 - p)) + b)))


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
    q = platt(1.0 - p[negative], float(cal["a"]), float(cal["b"]))
    mass = float(np.delete(p, negative).sum())  # not 1 - p[negative]: that rounds tiny masses to 0
    out = p * (q / mass) if mass > 0 else np.full_like(p, q / max(1, len(p) - 1))
    out[negative] = 1.0 - q
    positives = [k for k in range(len(p)) if k != negative]
    best = max(positives, key=lambda k: out[k]) if q >= float(cal["threshold"]) else negative
    return out, best

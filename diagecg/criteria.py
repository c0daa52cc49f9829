"""The measurement that defines a finding: which number of ``diagecg.features`` a cardiologist reads first.

Sinus bradycardia is a heart rate below 60 bpm, a complete bundle branch block a QRS of 120 ms or
more, a first degree AV block a PR above 200 ms. For each such finding this table names the
measurement, the direction in which it points to the finding and the usual clinical cut-off. It
serves two purposes, and decides no answer:

* the *ruler* baseline of every evaluation: the AUC of the measurement alone (``diagecg eval``,
  ``bench/ecg_dependence.py``), which the model's answer should match;
* the ``evidence`` of an answer: the measured values the finding rests on, beside the model's answer.

Findings are named by their PTB-XL SCP code (the names of ``diagecg.statements``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from diagecg.features import FEATURE_NAMES

__all__ = ["CRITERIA", "Criterion", "criterion_for", "criterion_score"]


@dataclasses.dataclass(frozen=True)
class Criterion:
    """Finding ``code`` is suggested by ``feature`` above (``direction`` +1) or below (-1) ``cutoff``."""

    code: str
    feature: str  # a name of diagecg.features.FEATURE_NAMES
    direction: int  # +1: larger values point to the finding; -1: smaller ones
    cutoff: float  # the usual clinical threshold, in the feature's unit
    unit: str

    def __post_init__(self) -> None:
        assert self.feature in FEATURE_NAMES, self.feature
        assert self.direction in (-1, 1), self.direction

    def suggests(self, value: float) -> bool:
        """Whether ``value`` is on the finding's side of the cut-off."""
        return value * self.direction > self.cutoff * self.direction


CRITERIA: tuple[Criterion, ...] = (
    Criterion("SBRAD", "heart_rate_bpm", -1, 60.0, "bpm"),
    Criterion("STACH", "heart_rate_bpm", +1, 100.0, "bpm"),
    Criterion("AFIB", "rr_cv", +1, 0.10, "RR coefficient of variation"),
    Criterion("1AVB", "pr_ms", +1, 200.0, "ms"),
    Criterion("LPR", "pr_ms", +1, 200.0, "ms"),
    Criterion("CLBBB", "qrs_ms", +1, 120.0, "ms"),
    Criterion("CRBBB", "qrs_ms", +1, 120.0, "ms"),
    Criterion("IVCD", "qrs_ms", +1, 110.0, "ms"),
    Criterion("LAFB", "axis_deg", -1, -45.0, "degrees"),
    Criterion("LNGQT", "qtc_ms", +1, 460.0, "ms"),
    Criterion("LVOLT", "limb_qrs_max_mv", -1, 0.5, "mV"),
    Criterion("VCLVH", "sokolow_mv", +1, 3.5, "mV"),
    Criterion("PVC", "rr_min_rel", -1, 0.8, "shortest RR / median RR"),
    Criterion("PAC", "rr_min_rel", -1, 0.8, "shortest RR / median RR"),
)
_BY_CODE = {c.code: c for c in CRITERIA}


def criterion_for(code: str) -> Criterion | None:
    """The defining measurement of finding ``code`` (an SCP code), or None when it has none."""
    return _BY_CODE.get(code)


def criterion_score(criterion: Criterion, features: np.ndarray) -> np.ndarray:
    """The measurement as a score that grows with the finding's likelihood: ``direction * value`` of
    (..., len(FEATURE_NAMES)) features; the ruler's AUC is this score's."""
    column = FEATURE_NAMES.index(criterion.feature)
    return criterion.direction * np.asarray(features, dtype=np.float64)[..., column]

"""The ruler baseline and the per-finding calibration (diagecg/scoring.py, calibration.py, criteria.py)."""

from __future__ import annotations

import numpy as np
import pytest

from diagecg.calibration import fit_calibration, fit_platt
from diagecg.calibration import platt as apply_platt
from diagecg.criteria import CRITERIA, criterion_for, criterion_score
from diagecg.features import FEATURE_NAMES
from diagecg.scoring import auc_interval, ruler_scores


def _features(hr: np.ndarray) -> np.ndarray:
    f = np.zeros((len(hr), len(FEATURE_NAMES)), np.float32)
    f[:, FEATURE_NAMES.index("heart_rate_bpm")] = hr
    return f


def test_every_criterion_names_a_measurement_and_a_side() -> None:
    assert len({c.code for c in CRITERIA}) == len(CRITERIA)
    brady = criterion_for("SBRAD")
    assert brady is not None and brady.feature == "heart_rate_bpm"
    assert brady.suggests(50) and not brady.suggests(70)
    assert criterion_for("NORM") is None
    # a lower heart rate scores higher for bradycardia, lower for tachycardia
    f = _features(np.array([45.0, 80.0]))
    assert criterion_score(brady, f)[0] > criterion_score(brady, f)[1]
    tachy = criterion_for("STACH")
    assert tachy is not None and criterion_score(tachy, f)[0] < criterion_score(tachy, f)[1]


def test_ruler_scores_the_defining_measurement_only() -> None:
    rng = np.random.default_rng(0)
    hr = np.concatenate([rng.uniform(40, 58, 20), rng.uniform(62, 95, 80)])
    truth = np.arange(100) < 20  # the slow ones are bradycardic: the ruler is perfect
    features = {i: f for i, f in enumerate(_features(hr))}
    ids = list(range(100)) * 2
    codes = ["SBRAD"] * 100 + ["NORM"] * 100
    out = ruler_scores(ids, codes, [*truth, *truth], features, n_boot=50)
    assert set(out) == {"SBRAD"}
    assert out["SBRAD"]["auc"] == 1.0 and out["SBRAD"]["n_pos"] == 20
    assert out["SBRAD"]["feature"] == "heart_rate_bpm"
    # inverted labels give an inverted ruler
    inv = ruler_scores(ids[:100], codes[:100], list(~truth), features, n_boot=50)
    assert inv["SBRAD"]["auc"] == 0.0


def test_auc_interval_contains_the_auc_and_narrows_with_data() -> None:
    rng = np.random.default_rng(1)

    def width(n: int) -> float:
        t = rng.random(n) < 0.3
        s = t + rng.normal(0, 1, n)
        lo, hi = auc_interval(t, s, n_boot=200)
        assert lo <= hi
        return hi - lo

    assert width(2000) < width(100)
    assert np.isnan(auc_interval(np.ones(5, bool), np.arange(5.0))[0])


def test_platt_scaling_recovers_an_overconfident_map() -> None:
    rng = np.random.default_rng(2)
    truth = rng.random(4000) < 0.1
    # a score that says 0.5-0.9 for most positives and 0.3-0.7 for negatives: far too high for 10%
    p = np.where(truth, rng.uniform(0.5, 0.9, truth.size), rng.uniform(0.3, 0.7, truth.size))
    a, b = fit_platt(p, truth)
    q = apply_platt(p, a, b)
    assert abs(q.mean() - truth.mean()) < 0.01  # calibrated on average
    assert np.all(np.diff(q[np.argsort(p)]) >= -1e-12)  # monotone: the ranking (AUC) is unchanged
    # importance weights that halve the positives halve the calibrated prevalence
    w = np.where(truth, 0.5, 1.0)
    qw = apply_platt(p, *fit_platt(p, truth, w))
    assert np.average(qw, weights=w) == pytest.approx(np.average(truth, weights=w), abs=0.01)


def test_fit_calibration_per_finding_with_a_threshold_that_separates() -> None:
    rng = np.random.default_rng(3)
    truth = rng.random(600) < 0.2
    p = np.clip(truth * 0.4 + rng.uniform(0.3, 0.6, 600), 0, 1)
    codes = ["AFIB"] * 600
    cal = fit_calibration(codes + ["RARE"] * 10, [*p, *[0.5] * 10], [*truth, *[True] * 2, *[False] * 8])
    assert set(cal) == {"AFIB"}  # too few positives: not calibrated
    c = cal["AFIB"]
    q = apply_platt(p, c["a"], c["b"])
    called = q >= c["threshold"]
    bal = ((called & truth).sum() / truth.sum() + (~called & ~truth).sum() / (~truth).sum()) / 2
    assert bal > 0.9 and c["n"] == 600 and c["n_pos"] == int(truth.sum())

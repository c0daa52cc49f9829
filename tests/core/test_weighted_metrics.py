"""Importance weights and bootstrap intervals in the metrics (training.metrics, training.findings) and the
stratified record subsets of the evaluation (diagecg.datasets.stratified_subset)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from diagecg.datasets import stratified_subset
from diagecg.datasets.ecgqa import QASample
from diagecg.scoring import bootstrap_auc_intervals, calibration, roc_auc, score_findings, weighted_roc_auc
from diagecg.training.metrics import majority_predictions


def test_weighted_auc_counts_a_sample_as_often_as_its_weight() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    s = np.round(y * 0.7 + rng.normal(size=300), 1)  # many ties
    assert weighted_roc_auc(y, s) == pytest.approx(roc_auc(y, s))
    w = rng.integers(0, 4, 300)
    assert weighted_roc_auc(y, s, w) == pytest.approx(roc_auc(np.repeat(y, w), np.repeat(s, w)))
    assert math.isnan(weighted_roc_auc(y, s, np.where(y, 0.0, 1.0)))  # positives weigh nothing


def test_bootstrap_intervals_cover_the_auc_and_narrow_with_more_records() -> None:
    rng = np.random.default_rng(1)

    def rows(n: int) -> dict:
        y = rng.random(n) < 0.3
        return {
            "a": (y, y * 1.0 + rng.normal(size=n), np.arange(n)),
            "b": (y, y * 0.5 + rng.normal(size=n), np.arange(n)),
        }

    small, large = rows(200), rows(3000)
    ci_small = bootstrap_auc_intervals(small, {"macro": ["a", "b"]}, n_boot=300)
    ci_large = bootstrap_auc_intervals(large, {"macro": ["a", "b"]}, n_boot=300)
    for name in ("a", "b"):
        lo, hi = ci_large[name]
        assert lo < roc_auc(large[name][0], large[name][1]) < hi
        assert hi - lo < ci_small[name][1] - ci_small[name][0]
    macro = np.mean([roc_auc(*large[k][:2]) for k in ("a", "b")])
    assert ci_large["macro"][0] < macro < ci_large["macro"][1]
    again = bootstrap_auc_intervals(large, n_boot=50, seed=3)
    assert bootstrap_auc_intervals(large, n_boot=50, seed=3) == again  # seeded


def test_weighted_calibration_and_majority() -> None:
    table = calibration([1, 0, 0], [0.35, 0.35, 0.35], n_bins=10, weights=[2.0, 1.0, 1.0])
    assert table["bins"][0]["observed"] == pytest.approx(0.5) and table["n"] == 3
    assert table["ece"] == pytest.approx(0.15)

    def q(answer: str) -> QASample:
        return QASample(
            ecg_id=1,
            question="AF?",
            answers=(answer,),
            question_type="single-verify",
            attribute_type="scp_code",
            template_id=1,
            attributes=("atrial fibrillation",),
            source="generated",
        )

    train = [q("yes"), q("yes"), q("no")]  # an AF-enriched sample: "yes" wins unweighted
    assert majority_predictions(train, [q("no")], by="question") == ["yes"]
    assert majority_predictions(train, [q("no")], by="question", weights=[0.2, 0.2, 1.0]) == ["no"]
    with pytest.raises(ValueError, match="weights"):
        majority_predictions(train, [q("no")], weights=[1.0])


def test_score_findings_weights_and_intervals() -> None:
    opts = ("no", "not sure", "yes")
    rng = np.random.default_rng(2)
    truth = rng.random(120) < 0.4
    p_yes = np.clip(truth * 0.4 + rng.random(120) * 0.6, 0.01, 0.99)
    probs = [np.array([1 - p, 0.0, p]) for p in p_yes]
    samples = [
        QASample(
            ecg_id=k,
            question="AF?",
            answers=("yes",) if t else ("no",),
            question_type="single-verify",
            attribute_type="scp_code",
            template_id=1,
            attributes=("atrial fibrillation",),
            source="generated",
        )
        for k, t in enumerate(truth)
    ]
    plain = score_findings(samples, ["AFIB"] * 120, probs, [opts] * 120, min_positives=5)
    assert plain["per_finding"]["AFIB"]["auc_ci95"] is None and plain["macro"]["statement_auc_ci95"] is None
    w = np.where(truth, 0.25, 1.0)
    out = score_findings(
        samples, ["AFIB"] * 120, probs, [opts] * 120, min_positives=5, weights=w, n_bootstrap=200
    )
    row = out["per_finding"]["AFIB"]
    assert row["auc"] == pytest.approx(weighted_roc_auc(truth, p_yes, w))
    assert row["n_pos"] == int(truth.sum())  # counts stay counts
    lo, hi = row["auc_ci95"]
    assert lo < row["auc"] < hi and out["macro"]["statement_auc_ci95"] == pytest.approx([lo, hi])


def test_stratified_subset_keeps_each_stratum_share() -> None:
    items = list(range(1000))
    strata = ["a"] * 700 + ["b"] * 270 + ["c"] * 30
    sub = stratified_subset(items, strata, 100, seed=0)
    assert len(sub) == 100 and sub == sorted(sub)
    assert Counter(strata[i] for i in sub) == {"a": 70, "b": 27, "c": 3}
    assert stratified_subset(items, strata, 100, seed=0) == sub
    assert stratified_subset(items, strata, 100, seed=1) != sub
    odd = stratified_subset(items, strata, 7, seed=0)  # 4.9 / 1.89 / 0.21: leftovers by remainder
    assert Counter(strata[i] for i in odd) == {"a": 5, "b": 2}
    assert stratified_subset(items, strata, None, seed=0) == items
    with pytest.raises(ValueError, match="strata"):
        stratified_subset(items, strata[:-1], 10, seed=0)

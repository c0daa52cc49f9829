"""QA exact match, the majority baseline and report metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diagecg.datasets.ecgqa import QASample
from diagecg.scoring import calibration, roc_auc
from diagecg.training.metrics import (
    exact_match_by_type,
    format_table,
    majority_baseline,
    majority_predictions,
    report_metrics,
)


def _s(
    tid: int,
    answers: tuple[str, ...],
    qtype: str = "single-verify",
    attrs: tuple[str, ...] = ("x",),
    atype: str = "scp_code",
) -> QASample:
    return QASample(
        ecg_id=1,
        question="q?",
        answers=answers,
        question_type=qtype,
        attribute_type=atype,
        template_id=tid,
        attributes=attrs,
        source="generated",
    )


def test_exact_match_compares_sets_by_type():
    samples = [
        _s(2, ("no", "yes")),
        _s(2, ("yes",)),
        _s(8, ("none",), "single-query"),
        _s(26, ("no",), atype="noise"),
    ]
    preds = ["yes; no", "no", "None.", "yes"]
    r = exact_match_by_type(samples, preds)
    assert r["overall"] == {"n": 4, "accuracy": 0.5}
    assert r["single-verify"] == {"n": 3, "accuracy": pytest.approx(1 / 3)}
    assert r["single-query"]["accuracy"] == 1.0
    assert r["attr/noise"] == {"n": 1, "accuracy": 0.0}
    assert r["attr/scp_code"]["accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="predictions"):
        exact_match_by_type(samples, preds[:2])


def test_majority_baseline_on_a_toy_set():
    train = [
        _s(1, ("yes",)),
        _s(1, ("yes",)),
        _s(1, ("no",)),
        _s(8, ("a", "b"), "single-query"),
        _s(8, ("a", "b"), "single-query"),
        _s(8, ("c",), "single-query"),
        _s(3, ("none",), "single-choose"),
    ]
    test = [
        _s(1, ("yes",)),
        _s(1, ("no",)),  # template majority "yes": 1 of 2
        _s(8, ("b", "a"), "single-query"),  # "a; b": right
        _s(9, ("c",), "single-query"),  # unseen template -> query-type majority "a; b": wrong
        _s(4, ("none",), "single-choose"),
    ]  # unseen template -> choose-type majority "none": right
    assert majority_predictions(train, test) == ["yes", "yes", "a; b", "a; b", "none"]
    r = majority_baseline(train, test)
    assert r["overall"]["accuracy"] == pytest.approx(3 / 5)
    assert r["single-verify"]["accuracy"] == 0.5 and r["single-choose"]["accuracy"] == 1.0
    # per-question majority uses the attributes too
    train_q = [_s(1, ("yes",), attrs=("p",)), _s(1, ("no",), attrs=("q",)), _s(1, ("no",), attrs=("q",))]
    assert majority_predictions(train_q, [_s(1, ("yes",), attrs=("p",))], by="question") == ["yes"]
    assert majority_predictions(train_q, [_s(1, ("yes",), attrs=("p",))], by="template") == ["no"]
    table = format_table(r, r)
    assert "baseline" in table and "single-query" in table


def test_perfect_reports_score_one():
    refs = ["sinus rhythm. non-specific st changes.", "sinus bradycardia. normal ecg."]
    m = report_metrics(refs, refs)
    for k in ("bleu1", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2", "rougeL"):
        assert m[k] == pytest.approx(1.0), k
    assert m["meteor"] > 0.99  # METEOR's fragmentation penalty keeps it just below 1
    assert m["n"] == 2


def test_bleu_matches_a_hand_computed_example():
    # hyp 6 tokens, ref 6 tokens (no brevity penalty); clipped matches:
    # unigrams 5/6, bigrams 3/5 (the cat, on the, the mat), trigrams 1/4 (on the mat), 4-grams 0/3
    m = report_metrics(["the cat sat on the mat"], ["the cat is on the mat"])
    assert m["bleu1"] == pytest.approx(5 / 6)
    assert m["bleu2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert m["bleu3"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3))
    assert m["bleu4"] == pytest.approx(0.0, abs=1e-9)
    assert m["rouge1"] == pytest.approx(5 / 6)


def test_meteor_runs_without_wordnet_and_matches_stems():
    stems = report_metrics(["runs fast"], ["running fast"])["meteor"]
    synonyms = report_metrics(["quick"], ["fast"])["meteor"]
    assert stems > 0.9 and synonyms == 0.0
    with pytest.raises(ValueError):
        report_metrics(["a"], [])


def _pairwise_auc(labels, scores) -> float:
    """P(score of a positive > score of a negative), ties counted half: the definition, pair by pair."""
    pos = [s for y, s in zip(labels, scores, strict=True) if y]
    neg = [s for y, s in zip(labels, scores, strict=True) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(6))
def test_roc_auc_matches_the_pairwise_count_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    labels = rng.integers(0, 2, n)
    labels[:2] = (0, 1)  # both classes
    scores = rng.integers(0, 4, n) + labels * rng.integers(0, 2, n)  # few distinct values: many ties
    assert roc_auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores), abs=1e-12)
    assert roc_auc(list(labels.astype(float)), list(scores.astype(float))) == roc_auc(labels, scores)


def test_roc_auc_extremes_and_one_class() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.9]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.9]) == 0.0
    assert roc_auc([0, 1, 0, 1], [5, 5, 5, 5]) == 0.5  # all tied
    assert roc_auc([0, 1], [-3.0, 1e9]) == 1.0  # any monotone score
    assert math.isnan(roc_auc([1, 1, 1], [0.1, 0.5, 0.9]))
    assert math.isnan(roc_auc([0, 0], [0.1, 0.5]))


def test_calibration_table_and_ece() -> None:
    # 10 answers at p=0.9 of which 9 right, 10 at p=0.2 of which 5 right: ECE = 0.5*0 + 0.5*0.3
    probs = [0.9] * 10 + [0.2] * 10
    outcomes = [1] * 9 + [0] + [1] * 5 + [0] * 5
    table = calibration(outcomes, probs)
    assert table["n"] == 20 and len(table["bins"]) == 2
    assert abs(table["ece"] - 0.15) < 1e-9
    assert calibration([1, 0], [1.0, 0.0])["ece"] == 0.0  # p = 1.0 falls in the last bin
    with pytest.raises(ValueError):
        calibration([1], [1.5])

"""Per-finding verify metrics and the ECG ablation (training.findings)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diagecg.datasets import resolve_data_roots
from diagecg.datasets.ecgqa import QASample, finding_questions, load_answer_vocab
from diagecg.datasets.ptbxl import SUPERCLASSES, TEST_FOLDS, has_finding
from diagecg.scoring import ablation_permutation, roc_auc, score_findings
from diagecg.training.eval_data import TRACKED_FINDINGS, select_findings
from diagecg.training.findings import option_probabilities


def test_ablation_is_a_seeded_derangement_within_each_fold():
    ids = list(range(100, 130))
    folds = [9] * 10 + [10] * 19 + [8]
    perm = ablation_permutation(ids, folds, seed=0)
    assert sorted(perm) == ids and sorted(perm.values()) == ids  # a permutation
    fold_of = dict(zip(ids, folds, strict=True))
    for i, j in perm.items():
        if fold_of[i] == 8:
            assert j == i  # the only record of its fold keeps its ECG
        else:
            assert j != i and fold_of[j] == fold_of[i]
    assert ablation_permutation(ids, folds, seed=0) == perm
    assert ablation_permutation(ids, folds, seed=1) != perm


def _sample(answer: str, name: str = "atrial fibrillation") -> QASample:
    return QASample(
        ecg_id=1,
        question=f"Does this ECG show symptoms of {name}?",
        answers=(answer,),
        question_type="single-verify",
        attribute_type="scp_code",
        template_id=1,
        attributes=(name,),
        source="generated",
    )


def test_score_findings_reads_present_as_one_minus_p_no():
    opts = ("yes", "no", "not sure")
    truth = ["yes", "no", "not sure", "no", "yes", "no"]
    # p(yes), p(no), p(not sure): the third record is "not sure" and scored present (1 - p(no) = 0.7)
    probs = [
        np.array(p)
        for p in (
            [0.8, 0.1, 0.1],
            [0.3, 0.6, 0.1],
            [0.2, 0.3, 0.5],
            [0.1, 0.8, 0.1],
            [0.4, 0.5, 0.1],
            [0.6, 0.35, 0.05],
        )
    ]
    samples = [_sample(a) for a in truth]
    out = score_findings(samples, ["AFIB"] * 6, probs, [opts] * 6, min_positives=2)
    row = out["per_finding"]["AFIB"]
    assert row["n"] == 6 and row["n_pos"] == 3 and row["name"] == "atrial fibrillation"
    present = [t != "no" for t in truth]
    assert row["auc"] == pytest.approx(roc_auc(present, [1 - p[1] for p in probs]))
    # answers: argmax -> yes, no, not sure, no, no, yes: positives called 2/3, negatives cleared 2/3
    assert row["sensitivity"] == pytest.approx(2 / 3) and row["specificity"] == pytest.approx(2 / 3)
    assert row["balanced_accuracy"] == pytest.approx(2 / 3)
    assert out["macro"]["n_statements"] == 1 and out["macro"]["statement_auc"] == pytest.approx(row["auc"])
    assert math.isnan(out["macro"]["superclass_auc"])  # no superclass asked
    # a statement below min_positives is reported but kept out of the macro
    strict = score_findings(samples, ["AFIB"] * 6, probs, [opts] * 6, min_positives=4)
    assert strict["macro"]["n_statements"] == 0


def test_select_findings_on_the_test_fold(ptbxl, scp_table, shared_data):
    ids = ptbxl.ids(TEST_FOLDS)
    vocab = load_answer_vocab(resolve_data_roots(shared_data).ecgqa)
    names = select_findings(ptbxl, ids, scp_table, vocab, min_positives=10)
    codes = list(names)
    assert codes[:5] == list(SUPERCLASSES) and names["NORM"] == "normal ecg"
    assert names["MI"] == "myocardial infarction" and names["AFIB"] == "atrial fibrillation"
    for code in codes[5:]:
        n_pos = sum(has_finding(ptbxl.entries[i], code) for i in ids)
        assert n_pos >= 10 or (code in TRACKED_FINDINGS and n_pos >= 1), code
    questions = finding_questions(ptbxl, ids[:3], names, scp_table, 0)
    assert len(questions) == 3 * len(names)


def test_option_probabilities_equal_a_direct_sequence_likelihood():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=50,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    ).eval()
    prompts = [[1, 5, 7, 9], [1, 4, 4, 4, 4, 4, 2]]
    options = [[[10, 3], [11, 3], [12, 13, 3]], [[10, 3], [11, 3]]]  # different lengths, shared prefixes
    got = option_probabilities(model, prompts, options, pad_id=0, batch_size=2)

    def logp(seq: list[int], n_prompt: int) -> float:
        with torch.no_grad():
            lsm = torch.log_softmax(model(torch.tensor([seq])).logits[0], dim=-1)
        return float(sum(lsm[t - 1, seq[t]] for t in range(n_prompt, len(seq))))

    for p, opts, probs in zip(prompts, options, got, strict=True):
        lp = np.array([logp(p + o, len(p)) for o in opts])
        want = np.exp(lp - lp.max())
        np.testing.assert_allclose(probs, want / want.sum(), rtol=1e-4)
        assert probs.sum() == pytest.approx(1.0)

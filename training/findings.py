"""Does the model read the ECG? Per-finding verify metrics and the ECG ablation.

For every finding of the evaluated records (the PTB-XL superclasses, each SCP statement with enough
positives, and a few tracked rhythm and conduction findings), every record is asked the verify
question of :func:`diagecg.datasets.ecgqa.finding_questions` ("Does this ECG show symptoms of X?").
The model's answer is read from its logits, not from free text: each answer option of the template
(``yes`` / ``no`` / ``not sure``) is scored as a whole continuation (``answer_prefix + option + eos``,
teacher-forced), and the options' probabilities are normalised over the options. From them:

* ``auc``: area under the ROC curve of ``p(present) = 1 - p(no)`` (``p(yes)`` for the yes/no
  questions of the superclasses and of form and rhythm statements; ``yes`` + ``not sure`` for the
  diagnostic statements whose uncertain labels ECG-QA answers ``not sure``); a record is positive
  when it shows the finding with any likelihood;
* ``sensitivity`` / ``specificity`` / ``balanced_accuracy`` of the answer, the most probable option
  (what a decoder restricted to the options returns), read as positive unless it is ``no``;
* ``auc_ci95``: the 95% percentile bootstrap interval of the AUC, records resampled (jointly for all
  findings, so the macro means get intervals too).

Statements are asked only of records whose statements are labelled (``finding_questions``). With
:func:`finding_sample_weights` every number is importance-weighted, so the AF-enriched subset of
ptbxl_full counts as PTB-XL's own AFIB prevalence would (superclass questions weigh 1).

The **ECG ablation** asks the same questions with each record's ECG tokens replaced by another
record's of the same fold (a seeded derangement; patient features unchanged). A model that reads the
ECG loses accuracy under it; one that answers from the question and the patient alone does not.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from diagecg.datasets.ecgqa import AnswerVocabulary, QASample, finding_names
from diagecg.datasets.ptbxl import SUPERCLASSES, PtbxlDataset, frequent_findings
from diagecg.datasets.reports import ScpStatement
from diagecg.training.metrics import bootstrap_auc_intervals, calibration, weighted_roc_auc

# reported whatever their count (the targets of the issue, and the Challenge's rhythm findings)
TRACKED_FINDINGS: tuple[str, ...] = ("AFIB", "CLBBB", "CRBBB", "1AVB", "PVC", "PAC", "SBRAD", "STACH")
NEGATIVE = "no"


def select_findings(ptbxl: PtbxlDataset, ecg_ids: Sequence[int], scp_table: dict[str, ScpStatement],
                    answer_vocab: AnswerVocabulary, min_positives: int) -> dict[str, str]:
    """The findings to score on ``ecg_ids``: code -> name asked.

    The superclasses, every nameable statement with at least ``min_positives`` positives among
    ``ecg_ids``, and the :data:`TRACKED_FINDINGS` with at least one.
    """
    frequent = frequent_findings(ptbxl, list(ecg_ids), min_positives)  # superclasses first
    present = {code for i in ecg_ids for code in ptbxl.entries[i].scp_codes}
    tracked = [c for c in TRACKED_FINDINGS if c in present and c not in frequent]
    return finding_names((*frequent, *tracked), scp_table, answer_vocab)


def finding_sample_weights(ptbxl: PtbxlDataset, ecg_ids: Sequence[int], codes: Sequence[str]) -> list[float]:
    """The importance weight of each (record, finding) question: 1 for a superclass (known for every
    record), the record's ``PtbxlDataset.statement_weights`` for a statement."""
    w = dict(zip(ecg_ids, ptbxl.statement_weights(list(ecg_ids)), strict=True))
    return [1.0 if c in SUPERCLASSES else float(w[i]) for i, c in zip(ecg_ids, codes, strict=True)]


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


@torch.no_grad()
def option_probabilities(model: Any, prompts: Sequence[Sequence[int]],
                         options: Sequence[Sequence[Sequence[int]]], *, pad_id: int,
                         batch_size: int) -> list[np.ndarray]:
    """Probabilities of each prompt's answer options, normalised over the options.

    Args:
        model: a Hugging Face causal LM (or a peft model), eval mode.
        prompts: token ids per prompt.
        options: per prompt, the token ids of each option's continuation (answer prefix + text + eos).
        pad_id: right padding (masked out).
        batch_size: sequences per forward pass.

    Returns:
        Per prompt, float64 (n_options,) summing to 1.
    """
    device = next(model.parameters()).device
    pairs = enumerate(zip(prompts, options, strict=True))
    seqs = [(k, j, list(p) + list(o), len(p)) for k, (p, opts) in pairs for j, o in enumerate(opts)]
    logp = [np.zeros(len(opts)) for opts in options]
    order = sorted(range(len(seqs)), key=lambda s: len(seqs[s][2]))
    for start in range(0, len(order), batch_size):
        batch = [seqs[s] for s in order[start:start + batch_size]]
        width = max(len(ids) for _, _, ids, _ in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (_, _, seq, _) in enumerate(batch):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()  # (B, T, V)
        lsm = torch.log_softmax(logits[:, :-1], dim=-1).cpu()  # position t predicts token t + 1
        for row, (k, j, seq, n_prompt) in enumerate(batch):
            targets = torch.tensor(seq[n_prompt:])
            positions = torch.arange(n_prompt - 1, len(seq) - 1)
            logp[k][j] = float(lsm[row, positions, targets].sum())
    out = []
    for lp in logp:
        p = np.exp(lp - lp.max())
        out.append(p / p.sum())
    return out


def _rates(truth: np.ndarray, called: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    pos, neg = (w * truth).sum(), (w * ~truth).sum()
    sens = float((w * (called & truth)).sum() / pos) if pos > 0 else math.nan
    spec = float((w * (~called & ~truth)).sum() / neg) if neg > 0 else math.nan
    return sens, spec


def score_findings(samples: Sequence[QASample], codes: Sequence[str], probs: Sequence[np.ndarray],
                   options: Sequence[Sequence[str]], min_positives: int,
                   weights: Sequence[float] | None = None, n_bootstrap: int = 0,
                   seed: int = 0, calls: Sequence[bool] | None = None) -> dict[str, Any]:
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
        r = rows.setdefault(c, {"truth": [], "score": [], "called": [], "name": [s.attributes[0]], "w": [],
                                "ecg_id": []})
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
    reliability = {"presence": calibration(truth, np.clip(present, 0.0, 1.0), weights=w_all),
                   "answer": calibration(called == truth, np.clip(confidence, 0.0, 1.0), weights=w_all)}
    per: dict[str, dict[str, Any]] = {}
    for c, r in rows.items():
        truth, called, row_w = np.array(r["truth"]), np.array(r["called"]), np.array(r["w"])
        sens, spec = _rates(truth, called, row_w)
        per[c] = {"name": r["name"][0], "n": len(truth), "n_pos": int(truth.sum()),
                  "auc": weighted_roc_auc(truth, r["score"], row_w), "auc_ci95": None, "sensitivity": sens,
                  "specificity": spec, "balanced_accuracy": (sens + spec) / 2}

    def macro(keys: list[str], metric: str) -> float:
        vals = [per[k][metric] for k in keys if not math.isnan(per[k][metric])]
        return float(np.mean(vals)) if vals else math.nan

    sup = [c for c in per if c in SUPERCLASSES]
    stm = [c for c in per if c not in SUPERCLASSES and per[c]["n_pos"] >= min_positives]
    intervals: dict[str, list[float] | None] = {"superclass": None, "statement": None}
    if n_bootstrap > 0 and rows:
        ci = bootstrap_auc_intervals({c: (r["truth"], r["score"], r["ecg_id"]) for c, r in rows.items()},
                                     groups={"superclass": sup, "statement": stm},
                                     weights={c: r["w"] for c, r in rows.items()}, n_boot=n_bootstrap,
                                     seed=seed)
        for c in per:
            per[c]["auc_ci95"] = list(ci[c])
        intervals = {"superclass": list(ci["superclass"]), "statement": list(ci["statement"])}
    return {"per_finding": per, "calibration": reliability, "macro": {
        "superclass_auc": macro(sup, "auc"), "superclass_auc_ci95": intervals["superclass"],
        "superclass_balanced_accuracy": macro(sup, "balanced_accuracy"),
        "statement_auc": macro(stm, "auc"), "statement_auc_ci95": intervals["statement"],
        "statement_balanced_accuracy": macro(stm, "balanced_accuracy"),
        "n_superclasses": len(sup), "n_statements": len(stm)}}

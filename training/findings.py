"""Does the model read the ECG? The PyTorch model's answers to the findings it is asked about.

For every finding of the evaluated records (the PTB-XL superclasses, each SCP statement with enough
positives, and a few tracked rhythm and conduction findings: ``training.eval_data.select_findings``,
torch-free, so the bundle benches ask the same), every record is
asked the verify question of :func:`diagecg.datasets.ecgqa.finding_questions` ("Does this ECG show
symptoms of X?"). The model's answer is read from its logits, not from free text: each answer option
(``yes`` / ``no`` / ``not sure``) is scored as a whole continuation (``answer_prefix + option + eos``,
teacher-forced), and the options' probabilities are normalised over the options
(:func:`option_probabilities`). ``diagecg.scoring.score_findings`` turns them into AUCs, sensitivity,
specificity and balanced accuracy, as it does for the exported bundle's answers.

Statements are asked only of records whose statements are labelled (``finding_questions``). With
``training.eval_data.finding_sample_weights`` every number is importance-weighted, so the AF-enriched
subset of ptbxl_full counts as PTB-XL's own AFIB prevalence would (superclass questions weigh 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


@torch.no_grad()
def option_probabilities(
    model: Any,
    prompts: Sequence[Sequence[int]],
    options: Sequence[Sequence[Sequence[int]]],
    *,
    pad_id: int,
    batch_size: int,
) -> list[np.ndarray]:
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
        batch = [seqs[s] for s in order[start : start + batch_size]]
        width = max(len(ids) for _, _, ids, _ in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (_, _, seq, _) in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
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

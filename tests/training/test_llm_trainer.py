"""example_losses computes logits only where a row has a target; the loss must equal the full computation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from builders import TINY_LLM_CORPUS, TINY_LLM_WIDTHS

from diagecg.training.base_model import build_tiny_base_model
from diagecg.training.llm_data import IGNORE_INDEX
from diagecg.training.llm_trainer import example_losses


def _full_losses(model, batch):
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits[:, :-1].float()
    target = batch["labels"][:, 1:]
    ce = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none")
    mask = target != IGNORE_INDEX
    return ce.sum(1) / mask.sum(1).clamp(min=1), mask.sum(1), ((logits.argmax(-1) == target) & mask).sum(1)


def test_losses_on_kept_logits_equal_the_full_computation(tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = build_tiny_base_model(
        TINY_LLM_CORPUS, tmp_path / "base", seed=0, vocab_size=400, max_position=256, **TINY_LLM_WIDTHS
    )
    model = AutoModelForCausalLM.from_pretrained(str(base)).eval()
    ids = torch.randint(3, 300, (3, 20))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 15:18] = ids[0, 15:18]  # answers at different places in each row
    labels[1, 5:7] = ids[1, 5:7]
    labels[2, 19] = ids[2, 19]
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0  # a shorter, padded row
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    with torch.no_grad():
        kept, full = example_losses(model, batch), _full_losses(model, batch)
    torch.testing.assert_close(kept[0], full[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(kept[1], full[1]) and torch.equal(kept[2], full[2])
    assert kept[1].tolist() == [3, 2, 1]

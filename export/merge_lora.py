"""Fold a LoRA adapter into its base model, and prove the merge changed nothing
(conventions: checked against a reference).

``merge_and_unload(safe_merge=True)`` makes peft check every merged weight for NaN before it
replaces the base weight; we then compare the merged model's logits with the adapter model's on
the same tokens, which must agree within ``atol``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from diagecg.errors import ExportError

logger = logging.getLogger(__name__)


@torch.no_grad()
def _logits(model: Any, input_ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=input_ids).logits.float()  # (B, T, V)


def merge_lora(
    peft_model: Any, sample_ids: torch.Tensor, *, atol: float = 1e-3
) -> tuple[Any, dict[str, Any]]:
    """Merge a peft (LoRA) model into a plain transformers model and check the logits.

    Args:
        peft_model: a ``peft.PeftModel`` wrapping a causal LM; consumed (its base weights change).
        sample_ids: int64 (B, T) token ids to compare logits on (real prompts, ECG tokens included).
        atol: largest allowed absolute logit difference between adapter and merged model.

    Returns:
        (merged model in eval mode, ``{"max_abs_diff", "mean_abs_diff", "top1_agreement", "atol",
        "n_tokens"}``).

    Raises:
        TypeError: ``peft_model`` has no ``merge_and_unload``.
        ExportError: a merged weight is NaN, or the logits differ by more than ``atol``.
    """
    if not hasattr(peft_model, "merge_and_unload"):
        raise TypeError(f"merge_lora expects a peft model, got {type(peft_model).__name__}")
    if sample_ids.dim() != 2 or sample_ids.dtype != torch.int64:
        raise ValueError(
            f"sample_ids must be int64 (batch, tokens), got {sample_ids.dtype} {tuple(sample_ids.shape)}"
        )
    peft_model.eval()
    before = _logits(peft_model, sample_ids)
    try:
        merged = peft_model.merge_and_unload(safe_merge=True, progressbar=False)
    except ValueError as e:  # peft's safe_merge: "NaNs detected in the merged weights"
        raise ExportError(f"LoRA merge failed: {e}") from e
    merged.eval()
    after = _logits(merged, sample_ids)
    diff = (after - before).abs()
    report = {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "top1_agreement": float((after.argmax(-1) == before.argmax(-1)).float().mean()),
        "atol": atol,
        "n_tokens": int(sample_ids.numel()),
    }
    logger.info(
        "merged LoRA: max |logit diff| %.2e over %d tokens", report["max_abs_diff"], report["n_tokens"]
    )
    if report["max_abs_diff"] > atol:
        raise ExportError(
            f"merged logits differ from the adapter's by {report['max_abs_diff']:.3g} > atol={atol}"
        )
    return merged, report

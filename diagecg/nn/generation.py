"""Greedy decoding of Hugging Face causal LMs under the one decoding policy (``diagecg.decoding``).

Training's sample generation (``training.sft``), ``diagecg eval`` (``training.evaluate``) and the
export's HF side of the parity check decode with the stop and banned ids of :func:`decoding_policy`,
the same policy the torch-free runtime applies to llama.cpp's logits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig as HfGenerationConfig
from transformers import LogitsProcessor, LogitsProcessorList

from diagecg.config import VocabConfig
from diagecg.decoding import DecodingPolicy
from diagecg.errors import CheckpointError

logger = logging.getLogger(__name__)

__all__ = ["BanIds", "decoding_policy", "greedy_generate"]


def decoding_policy(
    vocab: VocabConfig, model: Any, text_tokenizer: Any = None, extra_stop_ids: Sequence[int | None] = ()
) -> DecodingPolicy:
    """The decoding policy (``diagecg.decoding``) of a Hugging Face model: the vocabulary's eos, any
    other eos its generation config names and ``extra_stop_ids``; embedding rows beyond
    ``text_tokenizer`` (a ``tokenizers.Tokenizer``) banned when it is given.

    Raises:
        CheckpointError: no eos id anywhere, or an inconsistent vocabulary.
    """
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    rows = model.get_input_embeddings().weight.shape[0]
    n_text = None if text_tokenizer is None else text_tokenizer.get_vocab_size(with_added_tokens=True)
    try:
        stops = [*(eos if isinstance(eos, (list, tuple)) else [eos]), *extra_stop_ids]
        return DecodingPolicy.build(vocab, rows, extra_stop_ids=stops, text_vocab_size=n_text)
    except ValueError as e:
        raise CheckpointError(f"the checkpoint cannot be decoded: {e}") from None


class BanIds(LogitsProcessor):
    """Sets the logits of the policy's banned ids to -inf."""

    def __init__(self, banned: Sequence[int], vocab_size: int) -> None:
        self.mask = torch.zeros(vocab_size, dtype=torch.bool)
        self.mask[list(banned)] = True

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = self.mask.to(scores.device)[: scores.shape[-1]]  # (V,) broadcast over (B, V)
        return scores.masked_fill(mask, float("-inf"))  # type: ignore[return-value]


@torch.no_grad()
def greedy_generate(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    pad_id: int,
    stop_ids: Sequence[int],
    max_new_tokens: int,
    batch_size: int,
    banned_ids: Sequence[int] = (),
    context: int | None = None,
    progress: bool = False,
) -> list[list[int]]:
    """Greedy continuations of many prompts, batched with left padding.

    Prompts are sorted by length first so a batch wastes little padding; results come back in
    the input order. Each continuation ends before its first stop id, and after at most
    ``min(max_new_tokens, context - len(prompt))`` tokens (greedy decoding is prefix-stable, so
    cutting a longer batch continuation equals decoding that prompt alone with its own budget).

    Args:
        model: a Hugging Face causal LM (or a PEFT model around one), in eval mode.
        prompts: token-id lists.
        pad_id: id used for left padding (masked out).
        stop_ids: ids that end an answer (eos...); not part of the result.
        max_new_tokens: per prompt.
        batch_size: prompts per ``generate`` call.
        banned_ids: ids never generated (the ECG code and marker tokens).
        context: the model's context in tokens (``max_position_embeddings``); None = unlimited.
            A prompt leaving no room gets an empty continuation (and a warning).
        progress: show a tqdm bar.

    Returns:
        One list of generated ids per prompt.
    """
    if not stop_ids:
        raise ValueError("greedy_generate needs at least one stop id (eos)")
    device = next(model.parameters()).device
    gen_cfg = HfGenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=pad_id,
        eos_token_id=list(stop_ids),
    )
    vocab_size = model.get_input_embeddings().weight.shape[0]
    processors = LogitsProcessorList([BanIds(banned_ids, vocab_size)] if banned_ids else [])
    budgets = [max_new_tokens if context is None else min(max_new_tokens, context - len(p)) for p in prompts]
    no_room = sum(b < 1 for b in budgets)
    if no_room:
        logger.warning(
            "%d prompts leave no room to answer in the model's context of %s tokens", no_room, context
        )
    order = sorted((k for k in range(len(prompts)) if budgets[k] >= 1), key=lambda k: (len(prompts[k]), k))
    out: list[list[int]] = [[] for _ in prompts]
    stops = set(stop_ids)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="generating", unit="batch", disable=not progress):
        idx = order[start : start + batch_size]
        gen_cfg.max_new_tokens = max(budgets[k] for k in idx)
        width = max(len(prompts[k]) for k in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)  # (B, T), left padded
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, k in enumerate(idx):
            p = prompts[k]
            ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[row, width - len(p) :] = 1
        gen = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            generation_config=gen_cfg,
            logits_processor=processors,
        )  # (B, T + new)
        for row, k in enumerate(idx):
            new = gen[row, width:].tolist()  # (new,) generated ids, padded after a stop
            cut = next((j for j, t in enumerate(new) if t in stops), len(new))
            out[k] = new[: min(cut, budgets[k])]
    return out

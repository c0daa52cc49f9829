"""GGUF (llama.cpp) against the merged HF model, on the same token ids
(conventions: checked against a reference).

Prompts go in as token ids, ECG tokens included, never as text: llama.cpp's tokenizer plays no
part. Two measurements per quantisation:

* logits: with ``logits_all=True`` llama.cpp returns every position's logits; we report the max and
  mean absolute difference from the HF logits and the fraction of positions whose top-1 token agrees;
* greedy answers: both models decode greedily from each prompt; we report the fraction of prompts
  whose whole answer is identical and the fraction of answer tokens that agree position by position.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from diagecg.decoding import DecodingPolicy
from diagecg.errors import ExportError

logger = logging.getLogger(__name__)


@torch.no_grad()
def hf_logits(model: Any, ids: Sequence[int]) -> np.ndarray:
    """float32 (T, V) next-token logits of a HF causal LM for one sequence of token ids."""
    x = torch.tensor([list(ids)], dtype=torch.int64)
    return model(input_ids=x).logits[0].float().numpy()


def open_gguf(path: str | Path, *, n_ctx: int, n_threads: int | None = None) -> Any:
    """A llama.cpp model that keeps every position's logits (``logits_all=True``), CPU only."""
    import llama_cpp

    return llama_cpp.Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_batch=min(n_ctx, 512),
        logits_all=True,
        n_gpu_layers=0,
        n_threads=n_threads,
        verbose=False,
    )


def gguf_logits(llm: Any, ids: Sequence[int]) -> np.ndarray:
    """float32 (T, V) logits of llama.cpp for one sequence of token ids (fed directly, no tokenizer)."""
    llm.reset()
    llm.eval(list(ids))
    return np.array(llm.scores[: len(ids)], dtype=np.float32, copy=True)


def compare_logits(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Max/mean |ref - got| and top-1 agreement of two (T, V) logit arrays."""
    assert ref.shape == got.shape, f"logit shapes differ: {ref.shape} vs {got.shape}"
    diff = np.abs(ref - got)
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "top1_agreement": float((ref.argmax(-1) == got.argmax(-1)).mean()),
        "logit_range": float(ref.max() - ref.min()),
    }


@torch.no_grad()
def greedy_hf(model: Any, ids: Sequence[int], *, max_new_tokens: int, policy: DecodingPolicy) -> list[int]:
    """Greedy continuation of ``ids`` by a HF causal LM under ``policy`` (stop token excluded)."""
    stop = set(policy.stop_ids)
    banned = torch.from_numpy(policy.banned_mask())
    x = torch.tensor([list(ids)], dtype=torch.int64)
    out: list[int] = []
    # recent transformers name the KV cache argument and output `cache`, earlier 5.x `past_key_values`
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    cache = None
    for _ in range(max_new_tokens):
        res = model(input_ids=x, use_cache=True, **{key: cache})
        cache = res[key]
        tok = int(res.logits[0, -1].masked_fill(banned[: res.logits.shape[-1]], float("-inf")).argmax())
        if tok in stop:
            break
        out.append(tok)
        x = torch.tensor([[tok]], dtype=torch.int64)
    return out


def greedy_gguf(llm: Any, ids: Sequence[int], *, max_new_tokens: int, policy: DecodingPolicy) -> list[int]:
    """Greedy continuation of ``ids`` by llama.cpp under ``policy`` (stop token excluded)."""
    stop = set(policy.stop_ids)
    banned = policy.banned_mask()
    llm.reset()
    llm.eval(list(ids))
    out: list[int] = []
    for _ in range(max_new_tokens):
        tok = int(np.argmax(np.where(banned[: llm.n_vocab()], -np.inf, llm.scores[llm.n_tokens - 1])))
        if tok in stop:
            break
        out.append(tok)
        llm.eval([tok])
    return out


def _context_for(prompts: Sequence[Sequence[int]], max_new_tokens: int) -> int:
    need = max(len(p) for p in prompts) + max_new_tokens + 1
    return int(-(-need // 64) * 64)


def logits_parity(
    model: Any,
    gguf_paths: Mapping[str, str | Path],
    prompts: Sequence[Sequence[int]],
    *,
    n_threads: int | None = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Per quantisation: logit differences between the HF model and each GGUF over all prompt positions.

    Args:
        model: the merged HF causal LM (eval mode) the GGUFs were converted from.
        gguf_paths: quant -> GGUF file.
        prompts: token-id sequences (real prompts, ECG tokens included).

    Returns:
        quant -> ``{"max_abs_diff", "mean_abs_diff", "top1_agreement", "logit_range", "n_positions"}``.
    """
    if not prompts:
        raise ValueError("logits_parity needs at least one prompt")
    refs = [hf_logits(model, p) for p in tqdm(prompts, desc="HF logits", disable=not progress)]
    n_ctx = _context_for(prompts, 0)
    results: dict[str, dict[str, float]] = {}
    for quant, path in gguf_paths.items():
        llm = open_gguf(path, n_ctx=n_ctx, n_threads=n_threads)
        try:
            rows = [
                compare_logits(ref, gguf_logits(llm, p))
                for ref, p in tqdm(
                    list(zip(refs, prompts, strict=True)), desc=f"GGUF {quant} logits", disable=not progress
                )
            ]
        finally:
            llm.close()
        weights = np.array([len(p) for p in prompts], dtype=np.float64)
        results[quant] = {
            "max_abs_diff": max(r["max_abs_diff"] for r in rows),
            "mean_abs_diff": float(np.average([r["mean_abs_diff"] for r in rows], weights=weights)),
            "top1_agreement": float(np.average([r["top1_agreement"] for r in rows], weights=weights)),
            "logit_range": max(r["logit_range"] for r in rows),
            "n_positions": int(weights.sum()),
        }
        logger.info(
            "GGUF %s vs HF: max |diff| %.3g, top-1 agreement %.2f%% over %d positions",
            quant,
            results[quant]["max_abs_diff"],
            100 * results[quant]["top1_agreement"],
            results[quant]["n_positions"],
        )
    return results


def greedy_parity(
    model: Any,
    gguf_paths: Mapping[str, str | Path],
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    policy: DecodingPolicy,
    n_threads: int | None = None,
    decode: Callable[[list[int]], str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Per quantisation: how often greedy GGUF answers equal greedy HF answers on held-out prompts.

    Args:
        model: the merged HF causal LM.
        gguf_paths: quant -> GGUF file.
        prompts: token-id sequences ending where the answer starts.
        max_new_tokens: answer length cap.
        policy: the stop and banned ids (``diagecg.decoding``), as the runtime decodes.
        decode: optional ids -> text, to store a few example answers.

    Returns:
        quant -> ``{"exact_match", "token_agreement", "n_prompts", "examples"}``.
    """
    if not prompts:
        raise ValueError("greedy_parity needs at least one prompt")
    refs = [
        greedy_hf(model, p, max_new_tokens=max_new_tokens, policy=policy)
        for p in tqdm(prompts, desc="HF greedy", disable=not progress)
    ]
    n_ctx = _context_for(prompts, max_new_tokens)
    results: dict[str, Any] = {}
    for quant, path in gguf_paths.items():
        llm = open_gguf(path, n_ctx=n_ctx, n_threads=n_threads)
        try:
            outs = [
                greedy_gguf(llm, p, max_new_tokens=max_new_tokens, policy=policy)
                for p in tqdm(prompts, desc=f"GGUF {quant} greedy", disable=not progress)
            ]
        finally:
            llm.close()
        pairs = list(zip(refs, outs, strict=True))
        same_tokens = sum(sum(a == b for a, b in zip(r, o, strict=False)) for r, o in pairs)
        n_tokens = sum(max(len(r), len(o)) for r, o in pairs)
        results[quant] = {
            "exact_match": float(np.mean([r == o for r, o in pairs])),
            "token_agreement": float(same_tokens / n_tokens) if n_tokens else 1.0,
            "n_prompts": len(prompts),
            "examples": [{"hf": decode(r), "gguf": decode(o)} for r, o in pairs[:3]] if decode else [],
        }
        logger.info(
            "GGUF %s greedy answers equal HF on %.1f%% of %d prompts",
            quant,
            100 * results[quant]["exact_match"],
            len(prompts),
        )
    return results


def check_thresholds(results: Mapping[str, Mapping[str, float]], min_top1: Mapping[str, float]) -> None:
    """Raise ExportError when a quant's top-1 agreement falls below its floor (quants without one pass)."""
    for quant, floor in min_top1.items():
        if quant in results and results[quant]["top1_agreement"] < floor:
            raise ExportError(
                f"GGUF {quant}: top-1 agreement {results[quant]['top1_agreement']:.3f} "
                f"with the HF model is below {floor}"
            )

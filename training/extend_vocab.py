"""Add the ECG tokens to a Hugging Face causal LM and its tokenizer (DiagECG, arXiv 2508.15338, stage 2).

``<ecg_0000>`` .. ``<ecg_{n-1}>``, then ``<ecg>`` and ``</ecg>`` (``diagecg.vocab.special_token_strings``)
are added as special added tokens in one block, so their ids are contiguous after the text
vocabulary. The embedding table grows to at least ``len(tokenizer)`` rows but is never shrunk: models
such as Qwen2 pad their table beyond the tokenizer, and those rows are kept (the ECG tokens may then
land inside the padding). The rows of the new tokens, in the input embedding and in an untied output
head, start at the mean of the text rows plus small Gaussian noise, so their initial logits look like
an average text token's (no loss spike) while staying distinguishable.

Call :func:`base_text_tokenizer` BEFORE extending: it is the text tokenizer without ECG tokens that
``diagecg.prompts.encode_prompt`` must use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer

from diagecg.config import VocabConfig
from diagecg.vocab import check_vocab, special_token_strings

logger = logging.getLogger(__name__)


def base_text_tokenizer(hf_tokenizer: Any) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` copy of a transformers fast tokenizer (take it before extending).

    Raises:
        TypeError: a slow (Python) tokenizer: diagecg needs the ``tokenizers`` JSON for the runtime.
    """
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(
            f"{type(hf_tokenizer).__name__} is not a fast tokenizer; diagecg needs a model folder "
            f"with tokenizer.json"
        )
    return Tokenizer.from_str(backend.to_str())


def _first(value: Any) -> int | None:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return None if value is None else int(value)


def eos_id_of(model: Any, hf_tokenizer: Any) -> int | None:
    """The eos id answers are trained to end with, in the order the GGUF export reads it:
    ``generation_config.eos_token_id`` (first), then ``config.eos_token_id``, then the tokenizer's."""
    gen = getattr(model, "generation_config", None)
    for value in (
        getattr(gen, "eos_token_id", None),
        getattr(model.config, "eos_token_id", None),
        hf_tokenizer.eos_token_id,
    ):
        if _first(value) is not None:
            return _first(value)
    return None


def bos_id_of(hf_tokenizer: Any) -> int | None:
    """The id the tokenizer prepends to a text when it adds special tokens (None: it adds none)."""
    bos = hf_tokenizer.bos_token_id
    if bos is None:
        return None
    with_special = hf_tokenizer.encode("a", add_special_tokens=True)
    plain = hf_tokenizer.encode("a", add_special_tokens=False)
    return int(bos) if len(with_special) > len(plain) and with_special[0] == bos else None


def new_token_rows(rows_before: int, vocab: VocabConfig) -> list[int]:
    """Embedding rows the extension created or re-initialised: the ECG ids and any rows added by the resize.

    With LoRA these rows must be trained and saved by value (peft ``trainable_token_indices``): a base
    model resized at load time gets fresh random values there.

    Args:
        rows_before: embedding rows of the base model before :func:`extend_vocabulary`.
        vocab: what it returned.
    """
    return list(range(min(rows_before, vocab.offset), vocab.vocab_size))


@torch.no_grad()
def _init_rows(
    weight: torch.Tensor, new_ids: list[int], n_ref: int, noise_scale: float, gen: torch.Generator
) -> None:
    """Set ``weight[new_ids]`` to the mean of ``weight[:n_ref]`` plus noise of ``noise_scale`` x their std."""
    ref = weight[:n_ref].float()  # (n_ref, hidden)
    mean, std = ref.mean(0), ref.std()
    noise = torch.randn((len(new_ids), weight.shape[1]), generator=gen) * (noise_scale * std.cpu())
    weight[new_ids] = (mean.cpu() + noise).to(weight.dtype).to(weight.device)


def extend_vocabulary(
    model: Any, hf_tokenizer: Any, n_codes: int, *, seed: int = 0, noise_scale: float = 0.1
) -> VocabConfig:
    """Add the ECG tokens to ``hf_tokenizer`` and make ``model``'s embedding table fit them (in place).

    Args:
        model: a transformers causal LM (llama, qwen2, mistral, ...).
        hf_tokenizer: its fast tokenizer; must not contain ECG tokens yet.
        n_codes: FSQ codebook size (``prod(levels)``).
        seed: seed of the initialisation noise.
        noise_scale: noise std as a fraction of the std of the existing rows.

    Returns:
        The VocabConfig: ``offset`` (id of ``<ecg_0000>``), ``start_id``, ``end_id``, ``vocab_size``
        (embedding rows), ``base_vocab_size`` (text tokens), ``bos_id`` / ``eos_id`` / ``pad_id``.

    Raises:
        ValueError: the tokenizer already has ECG tokens, or the added ids are not contiguous.
    """
    strings = special_token_strings(n_codes)
    existing = [s for s in (strings[0], strings[-2], strings[-1]) if s in hf_tokenizer.get_vocab()]
    if existing:
        raise ValueError(
            f"the tokenizer already contains ECG tokens {existing}; extend the base model only once"
        )
    n_base = len(hf_tokenizer)
    emb = model.get_input_embeddings()
    old_rows = emb.weight.shape[0]
    added = hf_tokenizer.add_tokens(
        [AddedToken(s, special=True, normalized=False) for s in strings], special_tokens=True
    )
    ids = hf_tokenizer.convert_tokens_to_ids(strings)
    if added != len(strings) or ids != list(range(n_base, n_base + len(strings))):
        raise ValueError(
            f"the ECG tokens did not get contiguous ids after the {n_base} text tokens "
            f"(added {added} of {len(strings)}, first ids {ids[:3]})"
        )
    rows = max(old_rows, len(hf_tokenizer))
    if rows > old_rows:
        model.resize_token_embeddings(rows, mean_resizing=False)
    emb = model.get_input_embeddings()
    n_ref = min(n_base, old_rows)
    # the ECG rows, plus rows of text tokens the base table lacked (a tokenizer longer than the table)
    fresh = sorted(set(ids) | set(range(old_rows, rows)))
    gen = torch.Generator().manual_seed(seed)
    _init_rows(emb.weight, fresh, n_ref, noise_scale, gen)
    out = model.get_output_embeddings()
    if out is not None and out.weight is not emb.weight:  # untied head: its new rows need the same care
        _init_rows(out.weight, fresh, n_ref, noise_scale, gen)
    eos = eos_id_of(model, hf_tokenizer)
    pad = hf_tokenizer.pad_token_id
    vocab = VocabConfig(
        n_codes=n_codes,
        offset=n_base,
        start_id=n_base + n_codes,
        end_id=n_base + n_codes + 1,
        vocab_size=model.get_input_embeddings().weight.shape[0],
        base_vocab_size=n_base,
        bos_id=bos_id_of(hf_tokenizer),
        eos_id=eos,
        pad_id=int(pad) if pad is not None else eos,
    )
    check_vocab(vocab)
    logger.info(
        "added %d ECG tokens at ids %d..%d; embedding rows %d -> %d",
        len(strings),
        n_base,
        n_base + len(strings) - 1,
        old_rows,
        vocab.vocab_size,
    )
    return vocab


@torch.no_grad()
def init_summary_embeddings(
    model: Any,
    vocab: VocabConfig,
    frame_codes: int,
    levels: int,
    names: list[str],
    encode_text: Callable[[str], Sequence[int]],
    seed: int = 0,
) -> None:
    """Start each summary token's input embedding from the words of its finding (in place).

    Summary code ``frame_codes + f * levels + l`` (finding ``f`` at level ``l``) gets the mean input
    embedding of the text tokens of ``names[f]`` (e.g. "atrial fibrillation"), plus a shared
    direction scaled from ``-1`` (level 0) to ``+1`` (the top level), at the typical row norm. The
    question "Does this ECG show symptoms of atrial fibrillation?" then already resembles its
    summary token, and the level is one direction for every finding, so the LLM learns one reading
    of "how likely" instead of one per finding. Only meaningful once the text embeddings are trained
    (a real base model, or the demo model after pretraining).

    Args:
        model: the causal LM whose vocabulary holds the summary codes.
        vocab: where the ECG codes sit (``offset``).
        frame_codes: FSQ frame codebook size (the summary codes follow it).
        levels: levels per finding.
        names: the finding names, in summary order.
        encode_text: text -> ids of the base text tokenizer.
        seed: seed of the level direction.
    """
    weight = model.get_input_embeddings().weight
    text = weight[: vocab.base_vocab_size or vocab.offset].float()
    row_norm = text.norm(dim=-1).median()
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(weight.shape[1], generator=gen)
    direction = direction / direction.norm() * row_norm
    for f, name in enumerate(names):
        ids = [i for i in encode_text(" " + name) if i < text.shape[0]]
        base = text[ids].mean(dim=0) if ids else torch.zeros(weight.shape[1])
        for level in range(levels):
            row = vocab.offset + frame_codes + f * levels + level
            weight[row] = (base + (2 * level / (levels - 1) - 1) * direction).to(weight.dtype)

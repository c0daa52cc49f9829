"""Hugging Face causal LM (llama / mistral / qwen2) -> GGUF, with the `gguf` package (GGUF spec:
https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).

A small, explicit converter for the architectures diagecg trains. It follows llama.cpp's
``convert_hf_to_gguf.py`` where the format demands it:

* tensor names come from ``gguf.get_tensor_name_map``; an unmapped tensor is an error;
* llama and mistral store q/k projections permuted for llama.cpp's rotary layout (rope type NORM,
  interleaved pairs) while HF uses the rotate-half layout; qwen2 runs NEOX rope in llama.cpp and
  needs no permutation;
* 1-D tensors (norms, biases) stay float32, matrices are float16 (``ftype="f16"``);
* the token list has exactly one entry per embedding row: rows the tokenizer does not use become
  ``[PAD{i}]`` UNUSED tokens;
* the ECG tokens and ``<ecg>``/``</ecg>`` are written as CONTROL tokens, which llama.cpp only
  matches when special-token parsing is on, so typed text cannot inject them.

Only byte-level BPE tokenizers (GPT-2, Qwen2, Llama-3 style) are supported; ``tokenizer.ggml.pre``
is detected from the tokenizer's pre-tokenizer (see ``PRE_TOKENIZER_BY_REGEX``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from diagecg.bpe import check_byte_level_bpe, detect_pre_tokenizer

logger = logging.getLogger(__name__)

# HF config.model_type -> (GGUF architecture, q/k need the rotary permutation)
ARCHITECTURES: dict[str, tuple[gguf.MODEL_ARCH, bool]] = {
    "llama": (gguf.MODEL_ARCH.LLAMA, True),
    "mistral": (gguf.MODEL_ARCH.LLAMA, True),  # llama.cpp runs mistral as llama
    "qwen2": (gguf.MODEL_ARCH.QWEN2, False),  # NEOX rope = HF rotate-half: no permutation
}

FTYPES: dict[str, tuple[np.dtype[Any], gguf.LlamaFileType]] = {
    "f16": (np.dtype(np.float16), gguf.LlamaFileType.MOSTLY_F16),
    "f32": (np.dtype(np.float32), gguf.LlamaFileType.ALL_F32),
}


def permute_qk(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Reorder q/k projection rows from HF rotate-half pairs to llama.cpp's interleaved pairs.

    Args:
        weight: (n_head * head_dim, ...) q or k projection weight (or bias).
        n_head: heads of this projection (``num_key_value_heads`` for k).
    """
    rows = weight.shape[0]
    assert rows % (2 * n_head) == 0, f"cannot permute {tuple(weight.shape)} for {n_head} heads"
    # (n_head, 2, head_dim/2, ...) -> (n_head, head_dim/2, 2, ...)
    pairs = weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
    return pairs.swapaxes(1, 2).reshape(weight.shape)


# --- tokenizer -----------------------------------------------------------------------------------------


def _tokenizer_json(tokenizer: Any) -> dict[str, Any]:
    """The tokenizers-library JSON of a path, a `tokenizers.Tokenizer` or a transformers fast tokenizer."""
    if isinstance(tokenizer, (str, Path)):
        p = Path(tokenizer)
        if p.is_dir():
            p = p / "tokenizer.json"
        if not p.is_file():
            raise FileNotFoundError(f"tokenizer file {p} not found")
        return json.loads(p.read_text(encoding="utf-8"))
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    backend = backend if backend is not None else tokenizer
    if not hasattr(backend, "to_str"):
        raise TypeError(
            f"unsupported tokenizer {type(tokenizer).__name__}: give a tokenizer.json path, a "
            "tokenizers.Tokenizer or a transformers fast tokenizer"
        )
    return json.loads(backend.to_str())


def _bos_from_post_processor(tok_json: Mapping[str, Any], bos_id: int | None) -> bool:
    post = tok_json.get("post_processor") or {}
    steps = post.get("processors", [post]) if post.get("type") == "Sequence" else [post]
    for step in steps:
        if step.get("type") == "TemplateProcessing":
            first = (step.get("single") or [{}])[0]
            special = first.get("SpecialToken", {}).get("id")
            if special is not None and bos_id is not None:
                ids = (step.get("special_tokens", {}).get(special) or {}).get("ids", [])
                return bos_id in ids
    return False


def build_gguf_vocab(
    tok_json: Mapping[str, Any], n_rows: int, control_token_ids: Iterable[int] = ()
) -> tuple[list[str], list[int], list[str]]:
    """Token strings, GGUF token types and merges for a byte-level BPE tokenizer.

    Args:
        tok_json: the tokenizers-library JSON.
        n_rows: rows of the embedding table; the token list gets exactly this many entries.
        control_token_ids: ids forced to CONTROL (the ECG tokens); each must exist in the tokenizer.

    Raises:
        ValueError: not a byte-level BPE, a token id >= n_rows, or a control id the tokenizer lacks.
    """
    check_byte_level_bpe(tok_json)
    model = tok_json["model"]
    id_to_token: dict[int, str] = {int(i): t for t, i in model["vocab"].items()}
    added = {int(a["id"]): a for a in tok_json.get("added_tokens", [])}
    for i, a in added.items():
        id_to_token[i] = a["content"]
    if id_to_token and max(id_to_token) >= n_rows:
        raise ValueError(
            f"tokenizer has token id {max(id_to_token)} but the embedding has only {n_rows} rows"
        )
    control = set(int(i) for i in control_token_ids)
    missing = sorted(i for i in control if i not in id_to_token)
    if missing:
        raise ValueError(f"control_token_ids {missing[:5]} are not in the tokenizer vocabulary")
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_rows):
        if i not in id_to_token:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(id_to_token[i])
        if i in control or (i in added and added[i].get("special", False)):
            types.append(gguf.TokenType.CONTROL)
        elif i in added:
            types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, types, merges


# --- model ---------------------------------------------------------------------------------------------


def _load_model(model_dir_or_model: Any) -> Any:
    if isinstance(model_dir_or_model, (str, Path)):
        from transformers import AutoModelForCausalLM

        p = Path(model_dir_or_model)
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"{p}: not a Hugging Face model folder (config.json missing)")
        return AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32)
    return model_dir_or_model


def _rope_theta(config: Any) -> float:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ("default", None):
        raise ValueError(f"rope_type={rope_type!r} is not supported by this converter (only default RoPE)")
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    if theta is None:
        raise ValueError("the model config has no rope_theta")
    return float(theta)


def _first_id(value: Any) -> int | None:
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else None
    return None if value is None else int(value)


def convert_hf_to_gguf(
    model_dir_or_model: Any,
    tokenizer: Any,
    out_path: str | Path,
    *,
    ftype: str = "f16",
    control_token_ids: Iterable[int] = (),
    tokenizer_pre: str | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    name: str = "diagecg",
) -> Path:
    """Write a Hugging Face llama/mistral/qwen2 causal LM and its tokenizer as one GGUF file.

    Args:
        model_dir_or_model: a HF model folder or an in-memory ``PreTrainedModel`` (merged, no adapters).
        tokenizer: a ``tokenizer.json`` path (or its folder), a ``tokenizers.Tokenizer`` or a
            transformers fast tokenizer; must be byte-level BPE.
        out_path: the ``.gguf`` file to write.
        ftype: ``"f16"`` (matrices float16, 1-D tensors float32) or ``"f32"``.
        control_token_ids: token ids written as CONTROL (the ECG tokens and ``<ecg>``/``</ecg>``).
        tokenizer_pre: llama.cpp pre-tokenizer name; default: detected from the tokenizer.
        bos_token_id, eos_token_id, pad_token_id: special ids written to the GGUF; default: from the
            model's (generation) config. llama.cpp stops generation on the eos id.
        name: ``general.name`` of the file.

    Returns:
        ``out_path``.

    Raises:
        ValueError: unsupported architecture, RoPE type, tokenizer or ftype; an unmapped tensor.
    """
    if ftype not in FTYPES:
        raise ValueError(f"ftype={ftype!r} is not supported; choose one of {sorted(FTYPES)}")
    np_dtype, file_type = FTYPES[ftype]
    model = _load_model(model_dir_or_model)
    cfg = model.config
    if cfg.model_type not in ARCHITECTURES:
        raise ValueError(
            f"model_type={cfg.model_type!r} is not supported; choose one of {sorted(ARCHITECTURES)}"
        )
    arch, needs_permute = ARCHITECTURES[cfg.model_type]
    n_layer = int(cfg.num_hidden_layers)
    n_head = int(cfg.num_attention_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_head)
    hidden = int(cfg.hidden_size)
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // n_head)
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act={cfg.hidden_act!r} is not supported (llama.cpp {arch.name} uses silu)")
    sliding = getattr(cfg, "sliding_window", None)
    if cfg.model_type == "mistral" and sliding and sliding < cfg.max_position_embeddings:
        logger.warning(
            "mistral sliding_window=%d is ignored by llama.cpp's llama architecture; keep prompts "
            "shorter than it",
            sliding,
        )

    embed = model.get_input_embeddings().weight
    n_rows = int(embed.shape[0])
    tok_json = _tokenizer_json(tokenizer)
    tokens, types, merges = build_gguf_vocab(tok_json, n_rows, control_token_ids)
    pre = tokenizer_pre or detect_pre_tokenizer(tok_json)

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out_path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(name)
    writer.add_context_length(int(cfg.max_position_embeddings))
    writer.add_embedding_length(hidden)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(int(cfg.intermediate_size))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(_rope_theta(cfg))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    if head_dim * n_head != hidden:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(n_rows)
    writer.add_file_type(file_type)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    gen = getattr(model, "generation_config", None)
    bos = bos_token_id if bos_token_id is not None else _first_id(getattr(cfg, "bos_token_id", None))
    eos = eos_token_id if eos_token_id is not None else _first_id(getattr(gen, "eos_token_id", None))
    eos = eos if eos is not None else _first_id(getattr(cfg, "eos_token_id", None))
    pad = pad_token_id if pad_token_id is not None else _first_id(getattr(cfg, "pad_token_id", None))
    for tid, add in (
        (bos, writer.add_bos_token_id),
        (eos, writer.add_eos_token_id),
        (pad, writer.add_pad_token_id),
    ):
        if tid is not None and 0 <= tid < n_rows:
            add(tid)
    writer.add_add_bos_token(_bos_from_post_processor(tok_json, bos))
    writer.add_add_eos_token(False)

    tensor_map = gguf.get_tensor_name_map(arch, n_layer)
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    n_written = 0
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when output.weight is absent
        gguf_name = tensor_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"cannot map tensor {hf_name!r} of {cfg.model_type} to a GGUF name")
        data = tensor.detach().to(torch.float32)
        if needs_permute and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            data = permute_qk(data, n_head)
        elif needs_permute and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            data = permute_qk(data, n_kv)
        array = data.numpy()
        array = array.astype(np_dtype if array.ndim >= 2 else np.float32)
        writer.add_tensor(gguf_name, array)
        n_written += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    logger.info(
        "wrote %s: %s, %d tensors, %d tokens (pre=%s), %s",
        out_path,
        arch.name.lower(),
        n_written,
        n_rows,
        pre,
        ftype,
    )
    return out_path


def gguf_info(path: str | Path) -> dict[str, Any]:
    """Facts about a GGUF worth recording in the manifest: architecture, n_vocab, context, file type."""
    reader = gguf.GGUFReader(str(path), "r")

    def scalar(key: str) -> Any:
        field = reader.get_field(key)
        return None if field is None else field.contents()

    arch = scalar("general.architecture")
    tokens = reader.get_field("tokenizer.ggml.tokens")
    file_type = scalar("general.file_type")
    return {
        "architecture": arch,
        "n_vocab": len(tokens.data) if tokens is not None else None,
        "context_length": scalar(f"{arch}.context_length"),
        "embedding_length": scalar(f"{arch}.embedding_length"),
        "block_count": scalar(f"{arch}.block_count"),
        "file_type": gguf.LlamaFileType(file_type).name if file_type is not None else None,
        "n_params": int(sum(int(t.n_elements) for t in reader.tensors)),
        "tokenizer_pre": scalar("tokenizer.ggml.pre"),
    }

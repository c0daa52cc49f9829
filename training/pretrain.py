"""Stage 2: extend an LLM's vocabulary with the ECG tokens and pretrain it to forecast ECG tokens.

DiagECG (arXiv 2508.15338) teaches the LLM the new ECG tokens by autoregressive forecasting: given
the tokens of part of a record, predict the tokens that follow (``llm_data.forecast_example``, several
context/target scales, loss on the target only). With the tiny from-scratch demo model
(``base_model=None``, see ``base_model.py``) a text LM objective on the project's own text is mixed in
(``text_ratio``) so the model also learns the language it will answer in.

    diagecg train pretrain --data shared/data --init runs/tokenizer --out runs/pretrain --set steps=2000
    diagecg train pretrain --init runs/tokenizer --out runs/pretrain-qwen --base-model /models/Qwen2.5-0.5B \\
        --set method=lora

A linear script (STYLE R20): data, model, optimiser, loop, checkpoint. Multi-GPU runs go through
``accelerate launch -m diagecg.cli train pretrain ...`` without code changes (``accelerate.Accelerator``
wraps model and optimiser; on one CPU it is a no-op). Training uses PTB-XL folds 1-8, the validation
loss fold 9; fold 10 (test) is refused. The output folder is an LLM checkpoint
(``diagecg.nn.llm_checkpoint``) plus ``run_summary.json``; ``--resume`` continues it bit-for-bit in
data order (batches depend on ``(seed, step)`` only).

Shared with ``sft.py``: LoRA wrapping, base-model loading and evaluation below; the optimiser, lr
schedule, accelerator, checkpointing and resume live in ``llm_trainer.py``.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from diagecg.config import (
    PRESETS,
    EncoderConfig,
    FSQConfig,
    GenerationConfig,
    PreprocessConfig,
    SummaryConfig,
)
from diagecg.constants import LLM_BASE_DIR, RUN_SUMMARY, ManifestKey
from diagecg.datasets import resolve_data_roots
from diagecg.datasets.ecgqa import load_answer_vocab
from diagecg.datasets.ptbxl import PtbxlDataset
from diagecg.datasets.reports import load_scp_table
from diagecg.nn.checkpoint import read_configs
from diagecg.nn.llm_checkpoint import BaseModelRef, LlmMeta, StageRecord, load_llm_checkpoint
from diagecg.prompts import PromptConfig
from diagecg.training.base_model import (
    DEMO_MODEL_NAME,
    build_tiny_base_model,
    check_base_model,
    materialise_base_model,
    resolve_base_model,
)
from diagecg.training.configs import LORA_TARGETS, PretrainConfig
from diagecg.training.ecg_data import source_fs_hz
from diagecg.training.extend_vocab import base_text_tokenizer, extend_vocabulary, new_token_rows
from diagecg.training.llm_data import (
    Example,
    ForecastScale,
    as_arrays,
    build_text_corpus,
    collate,
    draw_examples,
    draw_forecast_examples,
    load_or_encode_tokens,
    split_encoded_ids,
    text_example,
)
from diagecg.training.llm_trainer import LlmTrainer, example_losses, start_run

logger = logging.getLogger(__name__)



# --- helpers shared with sft.py ------------------------------------------------------------


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


def unigram_loss(
    train_records: Sequence[np.ndarray], examples: Sequence[Example], offset: int, n_codes: int
) -> float:
    """Loss of predicting every code from its training frequency (add-one): the bar forecasting must beat."""
    counts = np.bincount(np.concatenate(train_records), minlength=n_codes).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    targets = [t - offset for _, labels in examples for t in labels if offset <= t < offset + n_codes]
    return float(-logp[np.asarray(targets, dtype=np.int64)].mean()) if targets else float("nan")


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
    return StageRecord("tokenizer", tuple(training.get("train_folds", ())),
                       tuple(training.get("eval_folds", ())), training)


def stage1_summary(init_dir: Path) -> SummaryConfig:
    """The stage-1 checkpoint's summary config (no findings when it has no summary head)."""
    stored = read_configs(init_dir)
    return SummaryConfig.from_dict(stored[ManifestKey.SUMMARY]) if ManifestKey.SUMMARY in stored \
        else SummaryConfig()


def write_summary(out_dir: Path, summary: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RUN_SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")


# --- main ------------------------------------------------------------------------------------


def main(cfg: PretrainConfig) -> dict[str, Any]:
    """Extend the vocabulary and pretrain on ECG-token forecasting; write the checkpoint to ``cfg.out_dir``.

    Returns:
        The run summary (also ``run_summary.json``).

    Raises:
        ValueError: no ``init_dir``; ``out_dir`` holds a checkpoint but ``resume`` is off; 4-bit on CPU.
        FileNotFoundError: data, stage-1 checkpoint or base model missing.
        DiagEcgError: the loss became NaN/inf.
    """
    t_start = time.time()
    if cfg.init_dir is None:
        raise ValueError(
            "PretrainConfig.init_dir is required: the --out folder of `diagecg train tokenizer` (pass --init)"
        )
    init_dir, out_dir = Path(cfg.init_dir), Path(cfg.out_dir)
    base_path = None
    if cfg.base_model is not None and not cfg.resume:  # refuse an unusable base now, not at export
        base_path = resolve_base_model(cfg.base_model)
        check_base_model(base_path)
    accelerator, qkw, resuming = start_run(cfg, out_dir)
    device = accelerator.device
    pre_cfg, enc_cfg, fsq_cfg, preset_name = stage1_configs(init_dir)

    # --- data: FSQ indices of every record (stage-1 cache), split by fold ---
    roots = resolve_data_roots(cfg.data_dir)
    ptbxl_root = roots.ptbxl
    ptbxl = PtbxlDataset(ptbxl_root)
    tokens = load_or_encode_tokens(init_dir, cfg.data_dir, out_dir, cfg.progress)
    fs_src = source_fs_hz(pre_cfg.fs_hz)
    train_ids, valid_ids = split_encoded_ids(ptbxl, tokens, fs_src, cfg.train_folds, cfg.valid_folds,
                                             cfg.max_train_records, cfg.seed)
    # forecasting runs over the frame tokens; the summary tokens (if any) lead each record's indices
    n_summary = stage1_summary(init_dir).n_tokens
    train_records = [t[n_summary:] for t in as_arrays(tokens, train_ids)]
    valid_records = [t[n_summary:] for t in as_arrays(tokens, valid_ids)]
    scales = [ForecastScale(c, t) for c, t in zip(cfg.context_fractions, cfg.target_fractions, strict=True)]
    for s in scales:
        s.lengths(enc_cfg.n_frames)  # raises early when a scale does not fit the record
    scp_table = load_scp_table(ptbxl_root)
    prompt = PromptConfig()
    corpus: list[str] | None = None

    def text_corpus() -> list[str]:  # the project's own text (demo tokenizer, text objective)
        answers = load_answer_vocab(roots.ecgqa)
        return build_text_corpus(ptbxl, train_ids, scp_table, answers, prompt, cfg.seed)

    # --- model: the base (demo or local HF folder), vocabulary extension, LoRA ---
    if resuming:
        model, hf_tok, meta, paths = load_llm_checkpoint(
            out_dir,
            trainable=True,
            dtype=base_dtype(device, cfg.method),
            **qkw,
        )
        if meta.method != cfg.method:
            raise ValueError(f"resume: {out_dir} was trained with method={meta.method!r}, not {cfg.method!r}")
        vocab, prompt, base_ref = meta.vocab, meta.prompt, meta.base_model
        text_tok = Tokenizer.from_file(str(paths.text_tokenizer))
    else:
        demo = cfg.base_model is None
        if demo:
            corpus = text_corpus()
            base_dir = build_tiny_base_model(
                corpus,
                out_dir / LLM_BASE_DIR,
                cfg.seed,
                vocab_size=cfg.demo_vocab_size,
                max_position=cfg.max_position,
            )
        else:  # a GGUF is dequantised into the checkpoint's base folder, a folder is used in place
            assert base_path is not None
            base_dir = materialise_base_model(base_path, out_dir / LLM_BASE_DIR)
        copied = demo or base_dir == out_dir / LLM_BASE_DIR
        model, hf_tok = load_hf_base(base_dir, base_dtype(device, cfg.method), qkw)
        rows_before = model.get_input_embeddings().weight.shape[0]
        text_tok = base_text_tokenizer(hf_tok)
        vocab = extend_vocabulary(
            model, hf_tok, fsq_cfg.codebook_size + stage1_summary(init_dir).n_codes, seed=cfg.seed,
            noise_scale=1.0 if demo else 0.1
        )
        base_ref = BaseModelRef(
            path=LLM_BASE_DIR if copied else str(base_dir),
            copied=copied,
            kind="hf",
            name=DEMO_MODEL_NAME if demo else str(cfg.base_model),
            model_type=model.config.model_type,
            demo=demo,
        )
        if cfg.method == "lora":
            model = wrap_lora(
                model,
                r=cfg.lora_r,
                alpha=cfg.lora_alpha,
                dropout=cfg.lora_dropout,
                target_modules=cfg.lora_target_modules,
                trainable_token_ids=new_token_rows(rows_before, vocab),
                quantized=bool(qkw),
                gradient_checkpointing=cfg.gradient_checkpointing,
            )
        elif cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
    assert vocab.pad_id is not None, (
        "extend_vocabulary always sets pad_id (eos when the tokenizer has no pad)"
    )
    text_ratio = cfg.text_ratio if cfg.text_ratio is not None else (0.3 if base_ref.demo else 0.0)
    max_len = int(getattr(model.config, "max_position_embeddings", cfg.max_position))

    def encode_text(text: str) -> list[int]:
        return text_tok.encode(text, add_special_tokens=False).ids

    text_pool: list[Example] = []
    if text_ratio > 0:
        if corpus is None:
            corpus = text_corpus()
        text_pool = [text_example(t, encode_text, vocab, max_len) for t in corpus]
    valid_examples = draw_forecast_examples(
        valid_records, vocab, scales, cfg.eval_examples, random.Random(f"diagecg-valid-{cfg.seed}")
    )
    baseline = unigram_loss(train_records, valid_examples, vocab.offset, vocab.n_codes)

    # --- optimiser (AdamW + lr schedule, resumed from out_dir when resuming) ---
    meta = LlmMeta(
        stage="pretrain",
        method=cfg.method,
        vocab=vocab,
        prompt=prompt,
        generation=GenerationConfig(max_new_tokens=cfg.max_new_tokens, n_ctx=max(64, max_len)),
        base_model=base_ref,
        preset=preset_name,
        train_folds=cfg.train_folds,
        valid_folds=cfg.valid_folds,
        lineage=(stage1_record(init_dir),
                 StageRecord("pretrain", cfg.train_folds, cfg.valid_folds, cfg.to_dict())),
    )
    trainer = LlmTrainer(
        cfg,
        "pretrain",
        "pretraining",
        accelerator,
        model,
        hf_tok=hf_tok,
        meta=meta,
        ecg_tokenizer_dir=init_dir,
        resuming=resuming,
    )

    def evaluate() -> dict[str, float]:
        return evaluate_examples(trainer.model, valid_examples, vocab.pad_id, cfg.batch_size, device)  # type: ignore[arg-type]

    # --- loop ---
    history = trainer.history
    if trainer.step == 0:
        history.append({"step": 0, **{f"eval_{k}": v for k, v in evaluate().items()}})
        logger.info(
            "pretrain step 0: eval loss %.3f (unigram baseline %.3f)", history[0]["eval_loss"], baseline
        )
    trainer.start_loop()
    recent: dict[str, list[float]] = {"loss": [], "ecg": [], "text": []}
    while trainer.step < trainer.last_step:
        rng = trainer.begin_step()
        for _ in range(cfg.grad_accum):
            n_text = sum(rng.random() < text_ratio for _ in range(cfg.batch_size)) if text_pool else 0
            examples = draw_forecast_examples(train_records, vocab, scales, cfg.batch_size - n_text, rng)
            examples += draw_examples(text_pool, n_text, rng)
            row_loss, _ = trainer.backward(examples)
            n_ecg = len(examples) - n_text
            recent["loss"].append(row_loss.mean().item())
            recent["ecg"].append(float(row_loss[:n_ecg].detach().mean()) if n_ecg else float("nan"))
            if n_text:
                recent["text"].append(float(row_loss[n_ecg:].detach().mean()))
        trainer.end_step()
        step = trainer.step
        if step % cfg.log_every == 0:
            trainer.bar.set_postfix(
                loss=f"{np.mean(recent['loss'][-cfg.log_every :]):.3f}",
                ecg=f"{np.nanmean(recent['ecg'][-cfg.log_every :]):.3f}",
            )
        if trainer.eval_due():
            last_eval = trainer.last_eval = evaluate()
            k = cfg.eval_every * cfg.grad_accum
            row = {
                "step": step,
                "lr": trainer.lr_at(step - 1),
                "train_loss": float(np.mean(recent["loss"][-k:])),
                "train_ecg_loss": float(np.nanmean(recent["ecg"][-k:])),
                "train_text_loss": float(np.mean(recent["text"][-k:])) if recent["text"] else None,
                **{f"eval_{key}": v for key, v in last_eval.items()},
            }
            history.append(row)
            logger.info(
                "pretrain step %d: train loss %.3f (ecg %.3f), eval ecg loss %.3f top1 %.3f",
                step,
                row["train_loss"],
                row["train_ecg_loss"],
                last_eval["loss"],
                last_eval["top1"],
            )
            trainer.checkpoint()
    trainer.finish(evaluate)

    summary: dict[str, Any] = {
        "stage": "pretrain",
        "preset": preset_name,
        "out_dir": str(out_dir),
        "init_dir": str(init_dir),
        "method": cfg.method,
        "base_model": base_ref.to_dict(),
        "wall_s": time.time() - t_start,
        "text_ratio": text_ratio,
        "n_frames": enc_cfg.n_frames,
        "vocab": vocab.to_dict(),
        "train_folds": list(cfg.train_folds),
        "valid_folds": list(cfg.valid_folds),
        "n_train_records": len(train_records),
        "n_valid_records": len(valid_records),
        "eval_unigram_loss": baseline,  # predicting codes by their training frequency
        "config": cfg.to_dict(),
        **trainer.summary_fields(),
    }
    if accelerator.is_main_process:
        write_summary(out_dir, summary)
    return summary

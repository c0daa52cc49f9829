"""Stage 2: extend an LLM's vocabulary with the ECG tokens and pretrain it to forecast ECG tokens.

DiagECG (arXiv 2508.15338) teaches the LLM the new ECG tokens by autoregressive forecasting: given
the tokens of part of a record, predict the tokens that follow (``llm_data.forecast_example``, several
context/target scales, loss on the target only). With the tiny from-scratch demo model
(``base_model=None``, see ``base_model.py``) a text LM objective on the project's own text is mixed in
(``text_ratio``) so the model also learns the language it will answer in.

    diagecg train pretrain --data shared/data --init runs/tokenizer --out runs/pretrain --set steps=2000
    diagecg train pretrain --init runs/tokenizer --out runs/pretrain-qwen --base-model /models/Qwen2.5-0.5B \\
        --set method=lora

``main`` reads as named steps (conventions: scripts read top to bottom): data, model, loop, summary.
Multi-process runs go through ``accelerate launch -m diagecg.cli train pretrain ...`` or ``torchrun``
(docs/SCALING.md): each process trains on its slice of the step's micro-batch, with ``batch_size`` rows
per process. Training uses PTB-XL folds 1-8, the validation loss fold 9; fold 10 (test) is refused. The
output folder is an LLM checkpoint (``diagecg.nn.llm_checkpoint``) plus ``run_summary.json``;
``--resume`` continues it bit-for-bit in data order (batches depend on ``(seed, step)`` only).

Shared with ``sft.py``: LoRA wrapping, base-model loading and evaluation below; the optimiser, lr
schedule, accelerator, checkpointing and resume live in ``llm_trainer.py``.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from diagecg.config import EncoderConfig, FSQConfig, GenerationConfig, PreprocessConfig, VocabConfig
from diagecg.constants import LLM_BASE_DIR
from diagecg.datasets import DataRoots, resolve_data_roots
from diagecg.datasets.ecgqa import load_answer_vocab
from diagecg.datasets.ptbxl import PtbxlDataset
from diagecg.datasets.reports import load_scp_table
from diagecg.nn.llm_checkpoint import BaseModelRef, LlmMeta, StageRecord, load_llm_checkpoint
from diagecg.prompts import PromptConfig
from diagecg.training.base_model import (
    DEMO_MODEL_NAME,
    build_tiny_base_model,
    check_base_model,
    materialise_base_model,
    resolve_base_model,
)
from diagecg.training.configs import PretrainConfig
from diagecg.training.ecg_data import source_fs_hz
from diagecg.training.extend_vocab import base_text_tokenizer, extend_vocabulary, new_token_rows
from diagecg.training.llm_data import (
    Example,
    ForecastScale,
    as_arrays,
    build_text_corpus,
    draw_examples,
    draw_forecast_examples,
    load_or_encode_tokens,
    split_encoded_ids,
    text_example,
)
from diagecg.training.llm_model import (
    base_dtype,
    evaluate_examples,
    load_hf_base,
    stage1_configs,
    stage1_record,
    stage1_summary,
    wrap_lora,
    write_summary,
)
from diagecg.training.llm_trainer import LlmTrainer, start_run

logger = logging.getLogger(__name__)


# --- pretrain-only evaluation -----------------------------------------------------------------


def unigram_loss(
    train_records: Sequence[np.ndarray], examples: Sequence[Example], offset: int, n_codes: int
) -> float:
    """Loss of predicting every code from its training frequency (add-one): the bar forecasting must beat."""
    counts = np.bincount(np.concatenate(train_records), minlength=n_codes).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    targets = [t - offset for _, labels in examples for t in labels if offset <= t < offset + n_codes]
    return float(-logp[np.asarray(targets, dtype=np.int64)].mean()) if targets else float("nan")


# --- main's steps ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage1:
    """The stage-1 checkpoint (``init_dir``) the LLM reads: its folder, configs and preset name."""

    init_dir: Path
    preprocess: PreprocessConfig
    encoder: EncoderConfig
    fsq: FSQConfig
    preset: str | None


@dataclass
class ForecastData:
    """The records to forecast: the frame tokens of the training and validation records, by fold."""

    roots: DataRoots
    ptbxl: PtbxlDataset
    train_ids: list[int]
    train_records: list[np.ndarray]  # frame tokens (frames,) of each training record
    valid_records: list[np.ndarray]
    scales: list[ForecastScale]
    scp_table: Any


@dataclass
class PretrainModel:
    """The LLM to train, its tokenizers and what the checkpoint records about them.

    ``corpus`` is the project's text corpus when building the demo base already needed it, else None.
    """

    model: Any
    hf_tok: Any
    text_tok: Tokenizer
    vocab: VocabConfig
    prompt: PromptConfig
    base_ref: BaseModelRef
    corpus: list[str] | None


@dataclass
class Examples:
    """The text pool mixed into training, the validation examples and the unigram bar they set."""

    text_ratio: float
    text_pool: list[Example]
    valid: list[Example]
    baseline: float  # loss of predicting codes by their training frequency
    max_len: int
    pad_id: int


def check_inputs(cfg: PretrainConfig) -> tuple[Path, Path, Path | None]:
    """The stage-1 folder, the output folder and the base model folder or GGUF (None: demo base, or a
    resumed run, which takes its base from the checkpoint). A base is checked now, not at export.

    Raises:
        ValueError: no ``init_dir``.
        FileNotFoundError: the base model is missing.
    """
    if cfg.init_dir is None:
        raise ValueError(
            "PretrainConfig.init_dir is required: the --out folder of `diagecg train tokenizer` (pass --init)"
        )
    base_path = None
    if cfg.base_model is not None and not cfg.resume:  # refuse an unusable base now, not at export
        base_path = resolve_base_model(cfg.base_model)
        check_base_model(base_path)
    return Path(cfg.init_dir), Path(cfg.out_dir), base_path


def load_data(
    cfg: PretrainConfig, accelerator: Any, init_dir: Path, out_dir: Path, stage1: Stage1
) -> ForecastData:
    """FSQ indices of every record (the stage-1 token cache, written once by the main process), split
    by fold, with their summary tokens dropped: forecasting runs over the frame tokens.

    Raises:
        ValueError: a forecast scale does not fit a record.
    """
    roots = resolve_data_roots(cfg.data_dir)
    ptbxl = PtbxlDataset.from_data_dir(cfg.data_dir, full=cfg.ptbxl_full)
    with accelerator.main_process_first():  # a missing token cache is written once, then read
        tokens = load_or_encode_tokens(init_dir, cfg.data_dir, out_dir, cfg.progress, full=cfg.ptbxl_full)
    fs_src = source_fs_hz(stage1.preprocess.fs_hz)
    train_ids, valid_ids = split_encoded_ids(
        ptbxl, tokens, fs_src, cfg.train_folds, cfg.valid_folds, cfg.max_train_records, cfg.seed
    )
    # forecasting runs over the frame tokens; the summary tokens (if any) lead each record's indices
    n_summary = stage1_summary(init_dir).n_tokens
    train_records = [t[n_summary:] for t in as_arrays(tokens, train_ids)]
    valid_records = [t[n_summary:] for t in as_arrays(tokens, valid_ids)]
    scales = [ForecastScale(c, t) for c, t in zip(cfg.context_fractions, cfg.target_fractions, strict=True)]
    for s in scales:
        s.lengths(stage1.encoder.n_frames)  # raises early when a scale does not fit the record
    scp_table = load_scp_table(roots.ptbxl)
    return ForecastData(roots, ptbxl, train_ids, train_records, valid_records, scales, scp_table)


def text_corpus(cfg: PretrainConfig, data: ForecastData, prompt: PromptConfig) -> list[str]:
    """The project's own text (the demo tokenizer's corpus and the text objective's examples)."""
    answers = load_answer_vocab(data.roots.ecgqa)
    return build_text_corpus(data.ptbxl, data.train_ids, data.scp_table, answers, prompt, cfg.seed)


def resume_model(cfg: PretrainConfig, out_dir: Path, device: Any, qkw: dict[str, Any]) -> PretrainModel:
    """The model, tokenizers, vocabulary and prompt of the checkpoint being resumed.

    Raises:
        ValueError: the checkpoint was trained with another ``method``.
    """
    model, hf_tok, meta, paths = load_llm_checkpoint(
        out_dir,
        trainable=True,
        dtype=base_dtype(device, cfg.method),
        **qkw,
    )
    if meta.method != cfg.method:
        raise ValueError(f"resume: {out_dir} was trained with method={meta.method!r}, not {cfg.method!r}")
    text_tok = Tokenizer.from_file(str(paths.text_tokenizer))
    return PretrainModel(model, hf_tok, text_tok, meta.vocab, meta.prompt, meta.base_model, None)


def new_model(
    cfg: PretrainConfig,
    accelerator: Any,
    qkw: dict[str, Any],
    data: ForecastData,
    init_dir: Path,
    out_dir: Path,
    base_path: Path | None,
    stage1: Stage1,
) -> PretrainModel:
    """The base (the demo model built from the project's text, or a local HF folder or GGUF), its
    vocabulary extended with the ECG tokens, wrapped in LoRA for ``method="lora"``."""
    device, prompt = accelerator.device, PromptConfig()
    demo = cfg.base_model is None
    corpus: list[str] | None = None
    with accelerator.main_process_first():  # the main process writes the base folder, the others read it
        if demo:
            corpus = text_corpus(cfg, data, prompt)
            base_dir = out_dir / LLM_BASE_DIR
            if accelerator.is_main_process:
                build_tiny_base_model(
                    corpus,
                    base_dir,
                    cfg.seed,
                    vocab_size=cfg.demo_vocab_size,
                    max_position=cfg.max_position,
                )
        else:  # a GGUF is dequantised into the checkpoint's base folder, a folder is used in place
            assert base_path is not None
            if accelerator.is_main_process:
                base_dir = materialise_base_model(base_path, out_dir / LLM_BASE_DIR)
            else:
                base_dir = base_path if base_path.is_dir() else out_dir / LLM_BASE_DIR
    copied = demo or base_dir == out_dir / LLM_BASE_DIR
    model, hf_tok = load_hf_base(base_dir, base_dtype(device, cfg.method), qkw)
    rows_before = model.get_input_embeddings().weight.shape[0]
    text_tok = base_text_tokenizer(hf_tok)
    vocab = extend_vocabulary(
        model,
        hf_tok,
        stage1.fsq.codebook_size + stage1_summary(init_dir).n_codes,
        seed=cfg.seed,
        noise_scale=1.0 if demo else 0.1,
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
    return PretrainModel(model, hf_tok, text_tok, vocab, prompt, base_ref, corpus)


def build_examples(cfg: PretrainConfig, data: ForecastData, llm: PretrainModel) -> Examples:
    """The text pool (demo base: 30% text rows unless ``text_ratio`` says otherwise), the seeded
    validation examples and the unigram baseline they give."""
    vocab = llm.vocab
    assert vocab.pad_id is not None, (
        "extend_vocabulary always sets pad_id (eos when the tokenizer has no pad)"
    )
    text_ratio = cfg.text_ratio if cfg.text_ratio is not None else (0.3 if llm.base_ref.demo else 0.0)
    max_len = int(getattr(llm.model.config, "max_position_embeddings", cfg.max_position))

    def encode_text(text: str) -> list[int]:
        return llm.text_tok.encode(text, add_special_tokens=False).ids

    text_pool: list[Example] = []
    if text_ratio > 0:
        corpus = llm.corpus if llm.corpus is not None else text_corpus(cfg, data, llm.prompt)
        text_pool = [text_example(t, encode_text, vocab, max_len) for t in corpus]
    valid_examples = draw_forecast_examples(
        data.valid_records, vocab, data.scales, cfg.eval_examples, random.Random(f"diagecg-valid-{cfg.seed}")
    )
    baseline = unigram_loss(data.train_records, valid_examples, vocab.offset, vocab.n_codes)
    return Examples(text_ratio, text_pool, valid_examples, baseline, max_len, vocab.pad_id)


def stage_meta(
    cfg: PretrainConfig, llm: PretrainModel, examples: Examples, stage1: Stage1, init_dir: Path
) -> LlmMeta:
    """The checkpoint's metadata: vocabulary, prompt, generation limits, base and lineage."""
    return LlmMeta(
        stage="pretrain",
        method=cfg.method,
        vocab=llm.vocab,
        prompt=llm.prompt,
        generation=GenerationConfig(max_new_tokens=cfg.max_new_tokens, n_ctx=max(64, examples.max_len)),
        base_model=llm.base_ref,
        preset=stage1.preset,
        train_folds=cfg.train_folds,
        valid_folds=cfg.valid_folds,
        lineage=(
            stage1_record(init_dir),
            StageRecord("pretrain", cfg.train_folds, cfg.valid_folds, cfg.to_dict()),
        ),
    )


def draw_micro_batch(
    data: ForecastData, vocab: VocabConfig, examples: Examples, rows: int, rng: random.Random
) -> tuple[list[Example], int]:
    """One micro-batch of all processes: forecasting rows, then ``text_ratio`` of text rows on average.

    Returns:
        (the ``rows`` examples, forecasting first; how many are text rows).
    """
    n_text = sum(rng.random() < examples.text_ratio for _ in range(rows)) if examples.text_pool else 0
    batch = draw_forecast_examples(data.train_records, vocab, data.scales, rows - n_text, rng)
    batch += draw_examples(examples.text_pool, n_text, rng)
    return batch, n_text


def train(
    cfg: PretrainConfig,
    trainer: LlmTrainer,
    data: ForecastData,
    examples: Examples,
    evaluate: Callable[[], dict[str, float]],
) -> None:
    """Train to the trainer's last step; evaluate, log and checkpoint every ``eval_every`` steps and at
    the end (a fresh run also evaluates the untrained model, against the unigram baseline).

    Raises:
        DiagEcgError: the loss became NaN/inf.
    """
    history, vocab = trainer.history, trainer.meta.vocab
    if trainer.evaluate_start(evaluate):
        logger.info(
            "pretrain step 0: eval loss %.3f (unigram baseline %.3f)",
            history[0]["eval_loss"],
            examples.baseline,
        )
    trainer.start_loop()
    recent: dict[str, list[float]] = {"loss": [], "ecg": [], "text": []}
    while trainer.step < trainer.last_step:
        rng = trainer.begin_step()
        for _ in range(cfg.grad_accum):
            batch, n_text = draw_micro_batch(data, vocab, examples, trainer.rows, rng)
            row_loss, _ = trainer.backward(batch)
            n_ecg = len(batch) - n_text
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
            k = cfg.eval_every * cfg.grad_accum
            row = trainer.record_eval(
                evaluate,
                {
                    "lr": trainer.lr_at(step - 1),
                    "train_loss": float(np.mean(recent["loss"][-k:])),
                    "train_ecg_loss": float(np.nanmean(recent["ecg"][-k:])),
                    "train_text_loss": float(np.mean(recent["text"][-k:])) if recent["text"] else None,
                },
            )
            logger.info(
                "pretrain step %d: train loss %.3f (ecg %.3f), eval ecg loss %.3f top1 %.3f",
                step,
                row["train_loss"],
                row["train_ecg_loss"],
                row["eval_loss"],
                row["eval_top1"],
            )
            trainer.checkpoint()
    trainer.finish(evaluate)


def run_summary(
    cfg: PretrainConfig,
    trainer: LlmTrainer,
    llm: PretrainModel,
    data: ForecastData,
    examples: Examples,
    stage1: Stage1,
    t_start: float,
) -> dict[str, Any]:
    """The run summary: what was trained from what, on which folds, and the trainer's fields."""
    return {
        "stage": "pretrain",
        "preset": stage1.preset,
        "out_dir": str(Path(cfg.out_dir)),
        "init_dir": str(stage1.init_dir),
        "method": cfg.method,
        "base_model": llm.base_ref.to_dict(),
        "wall_s": time.time() - t_start,
        "text_ratio": examples.text_ratio,
        "n_frames": stage1.encoder.n_frames,
        "vocab": llm.vocab.to_dict(),
        "train_folds": list(cfg.train_folds),
        "valid_folds": list(cfg.valid_folds),
        "n_train_records": len(data.train_records),
        "n_valid_records": len(data.valid_records),
        "eval_unigram_loss": examples.baseline,  # predicting codes by their training frequency
        "config": cfg.to_dict(),
        **trainer.summary_fields(),
    }


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
    init_dir, out_dir, base_path = check_inputs(cfg)
    accelerator, qkw, resuming = start_run(cfg, out_dir)
    stage1 = Stage1(init_dir, *stage1_configs(init_dir))
    data = load_data(cfg, accelerator, init_dir, out_dir, stage1)
    if resuming:
        llm = resume_model(cfg, out_dir, accelerator.device, qkw)
    else:
        llm = new_model(cfg, accelerator, qkw, data, init_dir, out_dir, base_path, stage1)
    examples = build_examples(cfg, data, llm)
    meta = stage_meta(cfg, llm, examples, stage1, init_dir)
    trainer = LlmTrainer(
        cfg,
        "pretrain",
        "pretraining",
        accelerator,
        llm.model,
        hf_tok=llm.hf_tok,
        meta=meta,
        ecg_tokenizer_dir=init_dir,
        resuming=resuming,
    )
    evaluate = functools.partial(
        evaluate_examples, trainer.model, examples.valid, examples.pad_id, cfg.batch_size, accelerator.device
    )
    train(cfg, trainer, data, examples, evaluate)
    summary = run_summary(cfg, trainer, llm, data, examples, stage1, t_start)
    if accelerator.is_main_process:
        write_summary(out_dir, summary)
    return summary

"""The optimisation machinery the two LLM stages (``pretrain.py``, ``sft.py``) share.

Each stage's ``main(cfg)`` still reads top to bottom (conventions: scripts read top to bottom): it builds
its data and model, then drives :class:`LlmTrainer` step by step, drawing its own batches and choosing
what its history rows hold.
The trainer owns what is the same in both: the accelerator, AdamW with linear warmup + cosine decay,
resume from the train state, gradient accumulation and clipping, the divergence check, the
checkpoint (model + train state) and the run-summary fields every stage reports.

Several processes (``accelerate launch`` / ``torchrun``, see docs/SCALING.md) train as one: every
process draws the same micro-batch of ``batch_size x processes`` rows from the step's rng, keeps its
own contiguous slice of ``batch_size`` rows, and DDP averages the gradients, so the update is the one
a single process makes on the whole micro-batch; the row losses are gathered back in row order for the
logged curve, and only the main process writes.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from diagecg.constants import LLM_TRAIN_STATE_DIR
from diagecg.errors import DiagEcgError
from diagecg.nn.llm_checkpoint import (
    LlmMeta,
    has_llm_checkpoint,
    load_train_state,
    read_llm_meta,
    save_llm_checkpoint,
    save_train_state,
)
from diagecg.training.device import resolve_device
from diagecg.training.llm_data import IGNORE_INDEX, Example, collate, step_rng

logger = logging.getLogger(__name__)


def make_accelerator(device: str, bf16: bool, grad_accum: int) -> Any:
    """An ``accelerate.Accelerator`` on the requested device (CPU: a single plain process).

    Raises:
        ConfigError: ``device="cuda"`` without CUDA.
    """
    from accelerate import Accelerator

    cpu = resolve_device(device).type != "cuda"
    return Accelerator(
        cpu=cpu, mixed_precision="bf16" if bf16 and not cpu else "no", gradient_accumulation_steps=grad_accum
    )


def quantized_load_kwargs(load_in_4bit: bool, accelerator: Any) -> dict[str, Any]:
    """``from_pretrained`` kwargs for a 4-bit NF4 base (QLoRA), or ``{}``.

    The quantised base is placed on this process's GPU at load time (bitsandbytes weights cannot be
    moved afterwards).

    Raises:
        ValueError: 4-bit asked on a CPU, or bitsandbytes is not installed.
    """
    if not load_in_4bit:
        return {}
    device = accelerator.device
    if device.type != "cuda":
        raise ValueError(
            f"load_in_4bit needs a CUDA GPU (bitsandbytes 4-bit kernels); this run is on {device.type}. "
            f"Drop --load-in-4bit or run on a GPU"
        )
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as e:
        raise ValueError(f"load_in_4bit needs bitsandbytes: pip install 'diagecg[train]' ({e})") from e
    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    return {"quantization_config": bnb, "device_map": {"": accelerator.local_process_index}}


def lr_at(step: int, *, steps: int, lr: float, warmup: int, min_ratio: float) -> float:
    """Linear warmup, then cosine decay to ``lr * min_ratio`` at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def default_lr(lr: float | None, method: str, demo: bool) -> float:
    if lr is not None:
        return lr
    if demo:
        return 1e-3
    return 2e-4 if method == "lora" else 2e-5


def example_losses(
    model: Any, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row mean next-token loss of a collated batch.

    Logits are computed only at the positions where some row has a target (``logits_to_keep``): the
    output projection over a 49k vocabulary at every position would cost a real base model most of
    its step on a CPU, for positions the loss ignores (prompts, ECG context). The result is the same.

    Returns:
        (row losses float32 (B,), target tokens per row (B,), correct top-1 predictions per row (B,)).
    """
    labels = batch["labels"]
    keep = torch.nonzero((labels[:, 1:] != IGNORE_INDEX).any(0)).squeeze(1)  # (K,) position i predicts i+1
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    logits = out.logits.float()  # (B, K, V)
    target = labels[:, keep + 1]  # (B, K)
    ce = F.cross_entropy(
        logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none"
    )  # (B, K)
    mask = target != IGNORE_INDEX
    n = mask.sum(1)
    correct = ((logits.argmax(-1) == target) & mask).sum(1)
    return ce.sum(1) / n.clamp(min=1), n, correct


def start_run(cfg: Any, out_dir: Path) -> tuple[Any, dict[str, Any], bool]:
    """Threads, torch seed, accelerator, 4-bit load kwargs and whether ``out_dir`` is resumed.

    Args:
        cfg: a ``PretrainConfig`` or ``SFTConfig``.
        out_dir: the stage's output folder.

    Returns:
        (accelerator, ``from_pretrained`` kwargs of ``quantized_load_kwargs``, resuming).

    Raises:
        ValueError: ``out_dir`` holds a checkpoint but ``resume`` is off; 4-bit on CPU.
    """
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    # LoRA's A matrices (and any dropout) draw from torch's global rng: seeded, a run is repeatable, and
    # every process of a multi-process run starts from the weights of a one-process run
    torch.manual_seed(cfg.seed)
    accelerator = make_accelerator(cfg.device, cfg.bf16, cfg.grad_accum)
    qkw = quantized_load_kwargs(cfg.load_in_4bit, accelerator)
    resuming = cfg.resume and has_llm_checkpoint(out_dir) and (out_dir / LLM_TRAIN_STATE_DIR).is_dir()
    if not resuming and has_llm_checkpoint(out_dir):
        raise ValueError(
            f"{out_dir} already holds a checkpoint: pass --resume to continue it, or choose another --out"
        )
    return accelerator, qkw, resuming


class LlmTrainer:
    """AdamW over the trainable parameters, stepped with the stage's lr schedule, checkpointed to ``out_dir``.

    Usage (one optimisation step per ``begin_step``/``end_step`` pair)::

        trainer = LlmTrainer(cfg, "pretrain", accelerator, model, ...)
        while trainer.step < trainer.last_step:
            rng = trainer.begin_step()
            for _ in range(cfg.grad_accum):
                row_loss, batch = trainer.backward(draw(trainer.rows, rng))
            trainer.end_step()
            if trainer.eval_due():
                ...; trainer.checkpoint()

    Args:
        cfg: a ``PretrainConfig`` or ``SFTConfig`` (steps, lr, schedule, clipping, seed, progress).
        stage: progress-bar label (``"pretrain"`` or ``"instruct"``).
        diverged: what the divergence error calls the stage (``"pretraining"``...).
        accelerator: from :func:`start_run`.
        model: the LLM; wrapped by ``accelerator.prepare`` (``self.model`` is the wrapped one).
        hf_tok, meta, ecg_tokenizer_dir: what :func:`save_llm_checkpoint` stores beside the model in
            ``cfg.out_dir`` (``meta`` also gives the pad id and whether the base is the demo model,
            whose default lr is higher).
        resuming: restore step, history and optimiser state from ``cfg.out_dir``.
    """

    def __init__(
        self,
        cfg: Any,
        stage: str,
        diverged: str,
        accelerator: Any,
        model: Any,
        *,
        hf_tok: Any,
        meta: LlmMeta,
        ecg_tokenizer_dir: Path,
        resuming: bool,
    ) -> None:
        assert meta.vocab.pad_id is not None, "the LLM vocabulary has a pad id"
        self.pad_id = meta.vocab.pad_id
        self.cfg, self.diverged, self.accelerator = cfg, diverged, accelerator
        self.hf_tok, self.meta, self.ecg_tokenizer_dir = hf_tok, meta, ecg_tokenizer_dir
        self.out_dir = out_dir = Path(cfg.out_dir)
        self.resuming = resuming
        self.rows = cfg.batch_size * accelerator.num_processes  # one micro-batch, all processes together
        self.lr = default_lr(cfg.lr, cfg.method, meta.base_model.demo)
        self.params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.params, lr=self.lr, weight_decay=cfg.weight_decay)
        self.step, self.history = 0, []
        if resuming:
            self.step, extra = load_train_state(out_dir, optimizer)
            self.history = list(extra.get("history", []))
            logger.info("resumed %s at step %d", out_dir, self.step)
        self.raw_optimizer = optimizer
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.n_trainable = sum(p.numel() for p in self.params)
        self.start_step = self.step
        self.last_step = cfg.steps if cfg.stop_at_step is None else cfg.stop_at_step
        self.train_time, self.n_tokens_seen = 0.0, 0
        self.last_eval: dict[str, float] | None = None
        self._t0 = 0.0
        self._stage = stage
        self.bar: Any = None

    def lr_at(self, step: int) -> float:
        """The scheduled learning rate of optimisation step ``step`` (0-based)."""
        c = self.cfg
        return lr_at(step, steps=c.steps, lr=self.lr, warmup=c.warmup_steps, min_ratio=c.min_lr_ratio)

    def checkpoint(self) -> None:
        """Save model, tokenizer, meta and train state (main process; all processes wait)."""
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            model = accelerator.unwrap_model(self.model)
            save_llm_checkpoint(self.out_dir, model, self.hf_tok, self.meta, self.ecg_tokenizer_dir)
            self.meta = read_llm_meta(self.out_dir)  # as stored: a copied LoRA base is not copied again
            save_train_state(
                self.out_dir, self.raw_optimizer, self.step, {"history": self.history, "seed": self.cfg.seed}
            )

    def evaluate_start(self, evaluate: Callable[[], dict[str, float]]) -> bool:
        """Evaluate the untrained model as history row 0, the reference point of a run (step 0 only).

        Returns:
            Whether it evaluated (False when resumed past step 0: row 0 is in the resumed history).
        """
        if self.step != 0:
            return False
        self.history.append({"step": 0, **{f"eval_{k}": v for k, v in evaluate().items()}})
        return True

    def record_eval(self, evaluate: Callable[[], dict[str, float]], train: dict[str, Any]) -> dict[str, Any]:
        """Evaluate after this step and append the history row ``{step, **train, eval_*}``.

        Args:
            evaluate: the stage's evaluation of ``self.model``.
            train: the stage's training entries of the row (losses since the last evaluation...).

        Returns:
            The row (``self.last_eval`` holds the evaluation).
        """
        last_eval = self.last_eval = evaluate()
        row = {"step": self.step, **train, **{f"eval_{k}": v for k, v in last_eval.items()}}
        self.history.append(row)
        return row

    def start_loop(self) -> None:
        """Train mode and the progress bar (after the step-0 evaluation)."""
        self.model.train()
        self.bar = tqdm(
            total=self.cfg.steps,
            initial=self.step,
            desc=self._stage,
            unit="step",
            disable=not self.cfg.progress or not self.accelerator.is_main_process,
        )

    def begin_step(self) -> random.Random:
        """Set this step's learning rate; return its batch rng (the same in every process)."""
        self._t0 = time.time()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        return step_rng(self.cfg.seed, self.step)

    def backward(self, examples: list[Example]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One micro-batch: forward, mean row loss, backward, clip and (at the accumulation boundary) step.

        Args:
            examples: the micro-batch of all processes (``self.rows`` rows, the same list in each);
                this process trains on its slice of ``cfg.batch_size`` rows.

        Returns:
            (per-row losses of all ``self.rows`` rows, detached, in ``examples`` order; this process's
            collated slice on the device).

        Raises:
            DiagEcgError: a row loss is NaN/inf (in every process at once).
        """
        accelerator, cfg = self.accelerator, self.cfg
        assert len(examples) == self.rows, f"{len(examples)} examples for a micro-batch of {self.rows} rows"
        first = accelerator.process_index * cfg.batch_size
        mine = examples[first : first + cfg.batch_size]
        batch = {k: v.to(accelerator.device) for k, v in collate(mine, self.pad_id).items()}
        with accelerator.accumulate(self.model):
            row_loss, _, _ = example_losses(self.model, batch)
            # gathered before backward, so every process sees a divergence and none waits in the all-reduce
            rows = accelerator.gather(row_loss.detach())  # (rows,) in rank order = examples order
            if not torch.isfinite(rows).all():
                raise DiagEcgError(
                    f"{self.diverged} diverged: loss {rows.mean().item()} at step {self.step} "
                    f"(try a lower lr than {self.lr})"
                )
            # every row counts the same, whatever its target length; DDP averages the equal-sized slices
            accelerator.backward(row_loss.mean())
            if accelerator.sync_gradients and cfg.grad_clip > 0:
                accelerator.clip_grad_norm_(self.params, cfg.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.n_tokens_seen += sum(len(ids) for ids, _ in examples)
        return rows, batch

    def end_step(self) -> None:
        """Count the step, its time and the progress bar."""
        self.step += 1
        self.train_time += time.time() - self._t0
        self.bar.update(1)

    def eval_due(self) -> bool:
        """An evaluation + checkpoint is due after this step (every ``eval_every`` steps and at the end)."""
        return self.step % self.cfg.eval_every == 0 or self.step == self.last_step

    def finish(self, evaluate: Callable[[], dict[str, float]]) -> dict[str, float]:
        """Close the bar; evaluate and checkpoint when the loop ran no step; return the last evaluation."""
        self.bar.close()
        if self.last_eval is None:
            self.last_eval = evaluate()
            self.checkpoint()
        return self.last_eval

    def summary_fields(self) -> dict[str, Any]:
        """The run-summary entries every LLM stage reports (speed, sizes, evaluations, history)."""
        steps_run = self.step - self.start_step
        history = self.history
        return {
            "device": str(self.accelerator.device),
            "n_processes": self.accelerator.num_processes,
            "step": self.step,
            "steps_this_run": steps_run,
            "resumed_from_step": self.start_step if self.resuming else None,
            "steps_per_s": steps_run / self.train_time if self.train_time > 0 else None,
            "tokens_per_s": self.n_tokens_seen / self.train_time if self.train_time > 0 else None,
            "lr": self.lr,
            "n_params": self.n_params,
            "n_trainable_params": self.n_trainable,
            "eval_initial": {k[5:]: v for k, v in history[0].items() if k.startswith("eval_")}
            if history
            else None,
            "eval": self.last_eval,
            "history": history,
        }

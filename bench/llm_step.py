"""Benchmark: one LoRA training step of an LLM stage on the CPU, with and without computing the logits
only where the loss is (``training.llm_trainer.example_losses``: ``logits_to_keep``).

An instruction-tuning batch is mostly prompt (patient line, ~107 ECG tokens, question) and a short
answer; the output projection over a real vocabulary (SmolLM2: 49k tokens, width 576) at every position
is a large share of the step although the loss ignores all but a few positions. Both variants run the
same batches (same model, LoRA r16 on every linear layer, seeded), alternating, and the table gives
the median step time, tokens/s and the ratio; the losses must agree.

    python bench/llm_step.py --base-model smollm2 --batch-size 8 --seq-len 180 --answer-len 4 --steps 4
    python bench/llm_step.py --base-model /path/to/hf_folder_or.gguf

Exit status: 0 when both variants ran and their losses agree to 1e-4, 1 otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from diagecg.training.base_model import check_base_model, materialise_base_model, resolve_base_model
from diagecg.training.llm_data import IGNORE_INDEX
from diagecg.training.llm_model import load_hf_base, wrap_lora
from diagecg.training.llm_trainer import example_losses


def full_losses(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The loss with logits at every position (what example_losses did before)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits[:, :-1].float()
    target = batch["labels"][:, 1:]
    ce = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none")
    return ce.sum(1) / (target != IGNORE_INDEX).sum(1).clamp(min=1)


def make_batch(
    vocab: int, batch_size: int, seq_len: int, answer_len: int, seed: int
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, vocab - 100, (batch_size, seq_len), generator=g)
    labels = torch.full_like(ids, IGNORE_INDEX)
    lengths = torch.randint(seq_len - 30, seq_len + 1, (batch_size,), generator=g)  # ragged, right-padded
    mask = torch.zeros_like(ids)
    for b, n in enumerate(lengths.tolist()):
        mask[b, :n] = 1
        labels[b, n - answer_len : n] = ids[b, n - answer_len : n]  # the answer ends the row
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-model", default="smollm2", help="HF folder, .gguf file or a named model")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=180)
    ap.add_argument("--answer-len", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per variant (after one warm-up each)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = resolve_base_model(args.base_model)
    check_base_model(path)
    with tempfile.TemporaryDirectory() as tmp:
        folder = materialise_base_model(path, Path(tmp) / "base")
        model, _ = load_hf_base(folder, torch.float32)
    model = wrap_lora(model, r=16, alpha=32, dropout=0.0, target_modules=None)
    model.train()
    vocab = model.get_input_embeddings().weight.shape[0]
    variants = {"full logits": full_losses, "logits where the loss is": lambda m, b: example_losses(m, b)[0]}
    times: dict[str, list[float]] = {name: [] for name in variants}
    losses: dict[str, list[float]] = {name: [] for name in variants}
    for step in range(args.steps + 1):
        batch = make_batch(vocab, args.batch_size, args.seq_len, args.answer_len, seed=step)
        for name, fn in variants.items():
            model.zero_grad(set_to_none=True)
            t = time.perf_counter()
            loss = fn(model, batch).mean()
            loss.backward()
            dt = time.perf_counter() - t
            if step:  # step 0 warms up
                times[name].append(dt)
                losses[name].append(float(loss))
    tokens = args.batch_size * args.seq_len
    base = statistics.median(times["full logits"])
    print(
        f"{args.base_model}: vocab {vocab}, batch {args.batch_size} x {args.seq_len} tokens, answers of "
        f"{args.answer_len}, LoRA r16, {torch.get_num_threads()} threads, {args.steps} steps each"
    )
    print(f"{'variant':<28}{'s/step':>9}{'tokens/s':>10}{'speed-up':>10}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<28}{med:>9.2f}{tokens / med:>10.0f}{base / med:>9.2f}x")
    agree = all(
        abs(a - b) < 1e-4
        for a, b in zip(losses["full logits"], losses["logits where the loss is"], strict=True)
    )
    print(f"losses agree: {agree}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())

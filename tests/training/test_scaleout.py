"""Data-parallel training: `train pretrain` and `train instruct` under ``accelerate launch`` with 2 CPU
processes (gloo) follow the loss curve of one process with the same global batch.

One process trains on micro-batches of 4 rows; two processes draw the same 4 rows from the step's rng,
each trains on its 2, and DDP averages the gradients; 2 micro-batches a step (gradient accumulation,
DDP syncing at the second only), so the global batch is 8 rows in both. The real CLI runs in
subprocesses on a tiny model built here and a random stage-1 checkpoint over the real PTB-XL records
(like test_pretrain.py).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from builders import TINY_LLM_CORPUS, TINY_LLM_WIDTHS, make_random_stage1

from diagecg.constants import LLM_TRAIN_STATE_DIR, RUN_SUMMARY
from diagecg.training.base_model import build_tiny_base_model

GLOBAL_BATCH = 4
STEPS = 6
# fp32 throughout; the two runs differ only in how sums are split (2 rows per forward instead of 4, the
# gradient averaged over processes by an all-reduce), so each step differs by rounding that Adam carries
# over 6 steps (1e-7 relative measured): 1e-5 is far above that and far below a real difference (both
# processes training on the same slice moved the losses by 1e-3 relative)
REL_TOL = 1e-5
COMMON = [
    f"--set={kv}"
    for kv in (
        f"steps={STEPS}",
        "eval_every=1",
        "log_every=1",
        "warmup_steps=2",
        "eval_examples=8",
        "max_train_records=32",
        "num_threads=1",
        "device=cpu",
        "progress=false",
        "ptbxl_full=false",
        "grad_accum=2",
    )
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(args: list[str], processes: int) -> dict:
    """``diagecg <args>`` in 1 process, or under ``accelerate launch`` in ``processes`` CPU processes
    (``--multi_gpu`` picks the torchrun launcher; without CUDA, the Accelerator runs on gloo); the
    summary is the run_summary.json the main process wrote."""
    cli = ["-m", "diagecg.cli", *args]
    if processes > 1:
        cli = [
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(free_port()),
            *cli,
        ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, *cli], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    out = Path(args[args.index("--out") + 1])
    summary = json.loads((out / RUN_SUMMARY).read_text())
    assert summary["n_processes"] == processes
    if processes > 1:  # only the main process printed its summary
        assert done.stdout.count('"stage":') == 1, done.stdout[-2000:]
    return summary


def curves(summary: dict) -> dict[str, list[float]]:
    """Per-step train loss and every evaluation loss of the history (eval_every=1: one row per step)."""
    rows = summary["history"]
    assert [r["step"] for r in rows] == list(range(STEPS + 1))
    keys = [k for k in rows[1] if k == "train_loss" or (k.startswith("eval_") and k.endswith("loss"))]
    return {k: [r[k] for r in rows[1:]] for k in keys}


def assert_same_curve(one: dict, two: dict) -> None:
    c1, c2 = curves(one), curves(two)
    assert c1.keys() == c2.keys() and "train_loss" in c1
    for k in c1:
        assert c2[k] == pytest.approx(c1[k], rel=REL_TOL), k
    assert c1["train_loss"][-1] < c1["train_loss"][0]  # it trained: the curve is not flat
    assert one["history"][0] == pytest.approx(two["history"][0], rel=1e-6)  # same starting model


@pytest.fixture(scope="module")
def stage1(shared_data: Path, ptbxl_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("scaleout")
    init = make_random_stage1(root, ptbxl_root)
    base = build_tiny_base_model(
        TINY_LLM_CORPUS, root / "base", 0, vocab_size=400, max_position=256, **TINY_LLM_WIDTHS
    )
    return {"root": root, "init": init, "base": base, "data": shared_data}


@pytest.mark.slow
def test_two_processes_follow_the_one_process_curve_in_pretrain_and_instruct(stage1: dict) -> None:
    root, data = stage1["root"], str(stage1["data"])
    pre: dict[int, dict] = {}
    for n in (1, 2):
        pre[n] = run_cli(
            [
                "train",
                "pretrain",
                "--data",
                data,
                "--init",
                str(stage1["init"]),
                "--out",
                str(root / f"pretrain-{n}"),
                "--base-model",
                str(stage1["base"]),
                *COMMON,
                "--set",
                f"batch_size={GLOBAL_BATCH // n}",
                "--set",
                "lr=3e-3",
            ],
            n,
        )
    assert_same_curve(pre[1], pre[2])
    assert (root / "pretrain-2" / LLM_TRAIN_STATE_DIR).is_dir()

    ins: dict[int, dict] = {}
    for n in (1, 2):  # LoRA (the default) from the same pretrain checkpoint; no dropout: no per-process rng
        ins[n] = run_cli(
            [
                "train",
                "instruct",
                "--data",
                data,
                "--init",
                str(root / "pretrain-1"),
                "--out",
                str(root / f"instruct-{n}"),
                *COMMON,
                "--set",
                f"batch_size={GLOBAL_BATCH // n}",
                "--set",
                "lr=1e-2",
                "--set",
                "lora_dropout=0",
                "--set",
                "question_rounds=1",
                "--set",
                "eval_generate=2",
            ],
            n,
        )
    assert_same_curve(ins[1], ins[2])
    assert ins[2]["generated"]["n_qa"] == 2  # the main process answered after training
    print(
        "pretrain",
        {n: curves(s)["train_loss"] for n, s in pre.items()},
        {n: s["wall_s"] for n, s in pre.items()},
    )
    print(
        "instruct",
        {n: curves(s)["train_loss"] for n, s in ins.items()},
        {n: s["wall_s"] for n, s in ins.items()},
    )

"""Benchmark: the torch-free runtime against the PyTorch pipeline, same model, same records.

One run measures, on the same instruction-tuned model and the same real held-out PTB-XL records:

* **pytorch**: ``diagecg.io.read_record`` -> ``diagecg.preprocess.model_inputs`` (signal and
  measurements) -> the torch ECG tokenizer
  (``diagecg.nn.checkpoint.load_tokenizer``) -> the transformers (+ peft) model of the instruct
  checkpoint (``load_llm_checkpoint(dir, merge=False)`` by default), greedy decoding as
  ``diagecg eval`` does it (``training.evaluate.LlmPredictor``: same prompt, same banned ids);
* **runtime-<quant>** for each GGUF: ``DiagEcgPipeline.from_bundle(bundle, quant, device="cpu")``,
  with its defaults: ECG codes cached per signal, KV cells of a shared prompt prefix kept;
* **runtime-<quant>-nocache** for each of ``--nocache-quants``: the same with both turned off
  (``ecg_cache_size=0, reuse_prefix=False``), every question evaluated from scratch.

Questions come grouped by record (4-5 about each ECG, as a reader asks them), so latency is also
reported apart for the first question about a record (``latency_first_ms``: nothing cached) and
the questions that follow it (``latency_followup_ms``); caches are cleared after the warm-up.

Each backend runs in its own subprocess (this file with ``--worker``), one after the other, so
cold start and peak memory are clean: cold start = process start -> model ready (interpreter
start, imports and loading included; bundle and checkpoint files are read once beforehand so
the OS page cache is warm for every backend), peak RSS = the worker's own high-water mark
(``peak_rss_mb``: ``VmHWM`` on Linux, where ``ru_maxrss`` would include the parent's). Both use
the same thread count (``torch.set_num_threads`` / the runtime's ``threads``). A worker answers
one warm-up question, then every question once (end-to-end latency: read, preprocess, ECG
tokens, prompt, greedy answer), then one question for all records in batch mode (runtime:
``answer_batch``; PyTorch: the records encoded together and answers generated in left-padded
batches of ``--torch-batch-size``). It writes one JSON line on stdout (``RESULT_MARKER``).

Questions are the held-out ones of ``diagecg eval``: ECG-QA template questions generated from
the PTB-XL labels of fold-10 records (``training.eval_data.build_eval_data``, the same seeded
record subset), with their gold answer sets. The parent prints a table with, per backend:
cold start, latency per question (median, p90), records/s in batch mode, peak RSS, agreement
with the PyTorch answers (% identical ``normalize_answer`` sets), exact match against the gold
answers, and the ratios against PyTorch beside the targets (runtime >= 2x faster on the first question
about a record, >= 5x on the questions that follow, <= 1/3 of its peak memory, Q8_0 exact match at most
1 point below PyTorch) with PASS/FAIL. A question outside the bundle's question catalogue is refused by
the runtime in milliseconds: it is counted in ``refused`` (its latency in ``refused_ms``) and left out
of every speed-up and of the accuracy comparison, both backends timed on the questions it answered.

    python bench/runtime.py --checkpoint runs/instruct --bundle bundle --data ../shared/data \\
        --n-records 20 --threads 8 --quants q8_0,q4_k_m --out bench/results.json

Exit status: 0 when every backend ran (whatever the targets say), 1 when a worker failed,
2 on bad arguments (checkpoint and bundle of different models, unknown quant, missing data).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import random
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from diagecg.errors import DiagEcgError

logger = logging.getLogger("bench.runtime")

SCHEMA_VERSION = 1
RESULT_MARKER = "BENCH_RESULT "  # prefix of the worker's one result line on stdout
TORCH = "pytorch"
RUNTIME_PREFIX = "runtime-"
NOCACHE_SUFFIX = "-nocache"
HELD_OUT_FOLDS: tuple[int, ...] = (10,)
TARGET_SPEEDUP_FOLLOWUP = 5.0  # runtime median latency of a later question about a record vs PyTorch
TARGET_SPEEDUP_FIRST = 2.0  # ... of the first question about a record (nothing cached)
TARGET_MEMORY_FRACTION = 1 / 3  # runtime peak RSS vs PyTorch
TARGET_ACCURACY_POINTS = 1.0  # exact match at most this many points below PyTorch ...
ACCURACY_TARGET_QUANTS: tuple[str, ...] = ("q8_0",)  # ... for these quantisations
PACKAGES = ("diagecg", "torch", "transformers", "peft", "onnxruntime", "llama_cpp_python", "tokenizers")
WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# what must never be imported by the runtime worker (checked and reported)
TORCH_MODULES = ("torch", "transformers", "peft")


class BenchError(Exception):
    """A benchmark that cannot run as asked (mismatched model pair, missing quant, no records)."""


# --- statistics and comparison (pure, tested without any model) ---------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between order statistics."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
    """``{n, median, p90, mean, min, max}`` in milliseconds."""
    if not seconds:
        return {
            "n": 0,
            "median": float("nan"),
            "p90": float("nan"),
            "mean": float("nan"),
            "min": float("nan"),
            "max": float("nan"),
        }
    ms = [s * 1e3 for s in seconds]
    return {
        "n": len(ms),
        "median": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "mean": sum(ms) / len(ms),
        "min": min(ms),
        "max": max(ms),
    }


def first_of_record(records: Sequence[str]) -> list[bool]:
    """For each question, whether it is the first one asked about its record."""
    seen: set[str] = set()
    flags = []
    for r in records:
        flags.append(r not in seen)
        seen.add(r)
    return flags


def split_latency(seconds: Sequence[float], first: Sequence[bool]) -> dict[str, dict[str, float]]:
    """Latency stats of the first question about each record and of the questions that follow."""
    if len(seconds) != len(first):
        raise ValueError(f"{len(seconds)} latencies but {len(first)} flags")
    return {
        "latency_first_ms": latency_stats([t for t, f in zip(seconds, first, strict=True) if f]),
        "latency_followup_ms": latency_stats([t for t, f in zip(seconds, first, strict=True) if not f]),
    }


def workload_latencies(
    seconds: Sequence[float], items: Sequence[dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """A worker's ``latency_ms`` (all questions), ``latency_first_ms`` and ``latency_followup_ms``."""
    return {
        "latency_ms": latency_stats(seconds),
        **split_latency(seconds, first_of_record([it["record"] for it in items])),
    }


def _answer_set(text: str | None) -> frozenset[str] | None:
    from diagecg.answers import normalize_answer

    return None if text is None else normalize_answer(text)


def agreement(predictions: Sequence[str | None], reference: Sequence[str | None]) -> float:
    """Share of items whose normalised answer sets are identical (a failed item never agrees)."""
    if len(predictions) != len(reference):
        raise ValueError(f"{len(predictions)} predictions but {len(reference)} reference answers")
    if not predictions:
        return float("nan")
    same = 0
    for p, r in zip(predictions, reference, strict=True):
        a, b = _answer_set(p), _answer_set(r)
        same += a is not None and a == b
    return same / len(predictions)


def exact_match(predictions: Sequence[str | None], gold: Sequence[Sequence[str]]) -> float:
    """Share of predictions whose normalised answer set equals the gold set (as ``diagecg eval`` scores)."""
    from diagecg.answers import format_answer, normalize_answer

    if len(predictions) != len(gold):
        raise ValueError(f"{len(predictions)} predictions but {len(gold)} gold answers")
    if not predictions:
        return float("nan")
    hits = sum(
        p is not None and normalize_answer(p) == normalize_answer(format_answer(g))
        for p, g in zip(predictions, gold, strict=True)
    )
    return hits / len(predictions)


def _target(value: float | None, op: str, bound: float) -> dict[str, Any]:
    ok = value is not None and value == value and (value >= bound if op == ">=" else value <= bound)
    return {"value": value, "target": f"{op} {bound:.3g}", "pass": bool(ok)}


# every number a comparison row carries (None where it cannot be computed), besides its "targets"
COMPARISON_KEYS = (
    "agreement",
    "exact_match",
    "n_refused",
    "exact_match_answered",
    "speedup_per_question",
    "speedup_first_question",
    "speedup_followup_question",
    "refused_ms",
    "memory_fraction",
    "accuracy_delta_points",
)


def _median_ms(res: dict[str, Any], indices: Sequence[int]) -> float | None:
    items = res["latency_items_ms"]
    return percentile([items[k] for k in indices], 50) if indices else None


def _ratio(base: float | None, value: float | None) -> float | None:
    return None if base is None or value is None or value <= 0 else base / value


def answered_speedups(
    base: dict[str, Any], res: dict[str, Any], answered: Sequence[int], records: Sequence[str]
) -> dict[str, float | None]:
    """Speed-ups over PyTorch on the questions ``res`` answered, both backends timed on the same ones.

    A question the runtime refuses (outside its catalogue) takes milliseconds and no model: counting it
    would flatter the ratio. The first answered question about a record is the one that pays for its ECG
    tokens and the prompt's prefill; later ones reuse them.
    """
    firsts = first_of_record([records[k] for k in answered])
    first = [k for k, f in zip(answered, firsts, strict=True) if f]
    follow = [k for k, f in zip(answered, firsts, strict=True) if not f]
    return {
        "speedup_per_question": _ratio(_median_ms(base, answered), _median_ms(res, answered)),
        "speedup_first_question": _ratio(_median_ms(base, first), _median_ms(res, first)),
        "speedup_followup_question": _ratio(_median_ms(base, follow), _median_ms(res, follow)),
        "answered_first_ms": _median_ms(res, first),
        "answered_followup_ms": _median_ms(res, follow),
    }


def compare(
    backends: dict[str, dict[str, Any]], gold: Sequence[Sequence[str]], records: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Per backend: agreement with PyTorch, exact match, and the ratios against PyTorch with their targets.

    Args:
        backends: name -> worker result (``predictions``, ``latency_ms``, ``latency_items_ms``,
            ``peak_rss_mb``...; a failed worker has ``error`` instead). ``TORCH`` is the baseline.
        gold: the gold answer set of every question, in workload order.
        records: each question's record, in workload order. With it (and per-item latencies) the speed-ups
            count only the questions the backend answered (``answered_speedups``); without, whole medians.

    Returns:
        name -> ``{"agreement", "exact_match", "speedup_per_question", "speedup_first_question",
        "speedup_followup_question", "refused_ms", "memory_fraction", "accuracy_delta_points",
        "targets": {name: {"value", "target", "pass"}}}``; ratios and targets are None/absent for the
        baseline and when the baseline failed.
    """
    base = backends.get(TORCH)
    base_ok = base is not None and "error" not in base
    base = base if base_ok and base is not None else {}
    out: dict[str, dict[str, Any]] = {}
    for name, res in backends.items():
        if "error" in res:
            out[name] = {key: None for key in COMPARISON_KEYS} | {"targets": {}}
            continue
        preds = res["predictions"]
        refused = set(res.get("unsupported", ()))
        answered = [k for k in range(len(gold)) if k not in refused]
        row: dict[str, Any] = {key: None for key in COMPARISON_KEYS} | {
            "agreement": agreement(preds, base["predictions"]) if base_ok and name != TORCH else None,
            "exact_match": exact_match(preds, gold),
            "n_refused": len(refused),
            "exact_match_answered": exact_match([preds[k] for k in answered], [gold[k] for k in answered]),
            "targets": {},
        }
        timed = records is not None and "latency_items_ms" in res
        if timed:
            row["refused_ms"] = _median_ms(res, sorted(refused))
        if base_ok and name != TORCH:
            if timed and "latency_items_ms" in base:
                assert records is not None
                row.update(answered_speedups(base, res, answered, records))
            else:  # whole medians (results without per-item latencies)
                row["speedup_per_question"] = base["latency_ms"]["median"] / res["latency_ms"]["median"]
                row["speedup_first_question"] = _ratio(
                    base["latency_first_ms"]["median"], res["latency_first_ms"]["median"]
                )
                row["speedup_followup_question"] = _ratio(
                    base["latency_followup_ms"]["median"], res["latency_followup_ms"]["median"]
                )
            row["memory_fraction"] = res["peak_rss_mb"] / base["peak_rss_mb"]
            # on the questions this backend answered: a refusal (unsupported question) is not a wrong answer
            base_exact = exact_match([base["predictions"][k] for k in answered], [gold[k] for k in answered])
            row["accuracy_delta_points"] = 100.0 * (row["exact_match_answered"] - base_exact)
            row["targets"]["speedup_first"] = _target(
                row["speedup_first_question"], ">=", TARGET_SPEEDUP_FIRST
            )
            row["targets"]["speedup_followup"] = _target(
                row["speedup_followup_question"], ">=", TARGET_SPEEDUP_FOLLOWUP
            )
            row["targets"]["memory"] = _target(row["memory_fraction"], "<=", TARGET_MEMORY_FRACTION)
            if res.get("quant") in ACCURACY_TARGET_QUANTS:
                row["targets"]["accuracy"] = _target(
                    row["accuracy_delta_points"], ">=", -TARGET_ACCURACY_POINTS
                )
        out[name] = row
    return out


def format_table(report: dict[str, Any]) -> str:
    """The plain-text table of a report (one row per backend, then the targets)."""
    w = report["workload"]
    kind = "reports" if w.get("task") == "report" else "questions"
    lines = [
        f"{w['n_questions']} {kind} on {w['n_records']} held-out PTB-XL records "
        f"(folds {w['folds']}), "
        f"{report['config']['threads']} threads; batch question: {w['batch_question']!r}"
    ]
    header = (
        f"{'backend':<24} {'cold s':>7} {'med ms':>8} {'p90 ms':>8} {'1st ms':>8} {'next ms':>8} "
        f"{'rec/s':>7} {'RSS MB':>7} {'agree%':>7} {'exact%':>7} {'speed-up':>9} {'1st x':>6} "
        f"{'next x':>6} "
        f"{'mem frac':>9} {'refused':>8}"
    )
    lines += [header, "-" * len(header)]

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None or v != v else format(v, fmt)

    for name, res in report["backends"].items():
        cmp = report["comparison"][name]
        if "error" in res:
            lines.append(f"{name:<24} FAILED: {res['error']}")
            continue
        pct = [None if v is None else 100 * v for v in (cmp["agreement"], cmp["exact_match"])]
        speedup = "-" if cmp["speedup_per_question"] is None else f"{cmp['speedup_per_question']:.2f}x"
        first_speedup = cmp.get("speedup_first_question")
        first_x = "-" if first_speedup is None else f"{first_speedup:.2f}x"
        next_speedup = cmp.get("speedup_followup_question")
        next_x = "-" if next_speedup is None else f"{next_speedup:.2f}x"
        first = res.get("latency_first_ms", {}).get("median")
        follow = res.get("latency_followup_ms", {}).get("median")
        lines.append(
            f"{name:<24} {num(res['cold_start_s'], '.2f'):>7} {num(res['latency_ms']['median'], '.1f'):>8} "
            f"{num(res['latency_ms']['p90'], '.1f'):>8} {num(first, '.1f'):>8} {num(follow, '.1f'):>8} "
            f"{num(res['batch']['records_per_s'], '.2f'):>7} "
            f"{num(res['peak_rss_mb'], '.0f'):>7} {num(pct[0], '.1f'):>7} {num(pct[1], '.1f'):>7} "
            f"{speedup:>9} {first_x:>6} {next_x:>6} {num(cmp['memory_fraction'], '.3f'):>9} "
            f"{cmp.get('n_refused') or 0:>8}"
        )
    target_lines = []
    labels = {
        "speedup_first": "speed-up, first question",
        "speedup_followup": "speed-up, later questions",
        "memory": "peak memory fraction",
        "accuracy": "exact match vs PyTorch on answered (points)",
    }
    for name, cmp in report["comparison"].items():
        for key, t in cmp["targets"].items():
            target_lines.append(
                f"  {name:<24} {labels[key]:<32} {num(t['value'], '.3f'):>8}  "
                f"target {t['target']:<8} {'PASS' if t['pass'] else 'FAIL'}"
            )
    if target_lines:
        lines += [
            "",
            "targets (against PyTorch measured in this run; speed-ups on the questions each "
            "backend answered):",
            *target_lines,
        ]
    return "\n".join(lines)


# --- workload (parent) --------------------------------------------------------------------------------


@dataclasses.dataclass
class Workload:
    """What every worker answers; written as JSON for the workers."""

    checkpoint: str
    bundle: str
    threads: int
    verify_hashes: bool
    torch_merge: bool
    torch_batch_size: int
    max_new_tokens: int
    items: list[dict[str, Any]]  # {record, ecg_id, question, answers, template_id, question_type, patient}
    batch_question: str
    batch_records: list[dict[str, Any]]  # {record, ecg_id, patient}
    folds: list[int]
    n_skipped_records: int


def _patient_dict(patient: Any) -> dict[str, Any]:
    return dataclasses.asdict(patient)


def check_model_pair(checkpoint: Path, bundle_dir: Path, quants: Sequence[str]) -> Any:
    """Load the bundle and refuse a checkpoint that is not the model it was exported from.

    Returns:
        The loaded ``diagecg.bundle.Bundle``.

    Raises:
        BenchError: configs differ, or a quant is not in the bundle.
    """
    from diagecg.bundle import load_bundle
    from diagecg.config import EncoderConfig, FSQConfig, PreprocessConfig, SummaryConfig
    from diagecg.constants import LLM_ECG_TOKENIZER_DIR, ManifestKey
    from diagecg.llm_meta import read_llm_meta
    from diagecg.nn.checkpoint import read_configs

    bundle = load_bundle(bundle_dir, verify_hashes=False)  # the workers load it for real
    missing = [q for q in quants if q not in bundle.quants]
    if missing:
        raise BenchError(f"{bundle_dir} has no GGUF for {missing}; it holds {list(bundle.quants)}")
    meta = read_llm_meta(checkpoint)
    stage1 = read_configs(checkpoint / LLM_ECG_TOKENIZER_DIR)
    summary = SummaryConfig.from_dict(stage1[ManifestKey.SUMMARY]) if ManifestKey.SUMMARY in stage1 else None
    pairs = {
        "vocab": (meta.vocab, bundle.vocab),
        "prompt": (meta.prompt, bundle.prompt),
        "preprocess": (PreprocessConfig.from_dict(stage1[ManifestKey.PREPROCESS]), bundle.preprocess),
        "encoder": (EncoderConfig.from_dict(stage1[ManifestKey.ENCODER]), bundle.encoder),
        "fsq": (FSQConfig.from_dict(stage1[ManifestKey.FSQ]), bundle.fsq),
        "summary": (summary if summary is not None and summary.enabled else None, bundle.summary),
    }
    differ = [k for k, (a, b) in pairs.items() if a != b]
    if differ:
        raise BenchError(
            f"checkpoint {checkpoint} and bundle {bundle_dir} are not the same model: their "
            f"{', '.join(differ)} configs differ"
        )
    if meta.generation.max_new_tokens != bundle.generation.max_new_tokens:
        logger.warning(
            "the checkpoint decodes up to %d new tokens, the bundle %d: both backends use the bundle's",
            meta.generation.max_new_tokens,
            bundle.generation.max_new_tokens,
        )
    return bundle


def build_workload(args: argparse.Namespace, bundle: Any) -> Workload:
    """Held-out questions with gold answers on a seeded subset of fold-10 records (as ``diagecg eval``).

    Raises:
        BenchError: no usable record or no question; the checkpoint trained on the held-out fold.
    """
    from diagecg.datasets import resolve_data_roots
    from diagecg.datasets.ptbxl import PtbxlDataset
    from diagecg.datasets.reports import load_scp_table
    from diagecg.io import read_record
    from diagecg.preprocess import model_inputs
    from diagecg.training.ecg_data import source_fs_hz
    from diagecg.training.eval_data import EvalConfig, build_eval_data
    from diagecg.training.eval_folds import check_folds, checkpoint_training_folds

    reports = args.task == "report"
    eval_cfg = EvalConfig(
        checkpoint_dir=str(args.checkpoint),
        data_dir=str(args.data),
        folds=HELD_OUT_FOLDS,
        wordings=(args.wording,),
        include_ecgqa_noise=args.ecgqa_noise,
        max_questions=args.max_questions,
        n_reports=args.max_questions if reports else 0,
        seed=args.seed,
    )
    try:
        check_folds(eval_cfg, checkpoint_training_folds(args.checkpoint))
    except ValueError as e:
        raise BenchError(str(e)) from e
    roots = resolve_data_roots(args.data)
    ptbxl_root, ecgqa_root = roots.ptbxl, roots.ecgqa
    ptbxl = PtbxlDataset(ptbxl_root)
    fs_src = source_fs_hz(bundle.preprocess.fs_hz)
    ids = ptbxl.ids(HELD_OUT_FOLDS, fs_hz=fs_src)
    if args.n_records < len(ids):  # the same subset as `diagecg eval --set max_records=N seed=S`
        ids = sorted(random.Random(f"eval-records-{args.seed}").sample(ids, args.n_records))
    kept, skipped = [], 0
    for i in ids:
        try:
            model_inputs(read_record(ptbxl.record_path(i, fs_src).with_suffix(".hea")), bundle.preprocess)
            kept.append(i)
        except DiagEcgError as e:
            logger.warning("record %d skipped: %s", i, e)
            skipped += 1
    if not kept:
        raise BenchError(f"no usable {fs_src} Hz records in folds {HELD_OUT_FOLDS} under {ptbxl_root}")
    data = build_eval_data(eval_cfg, ptbxl, load_scp_table(ptbxl_root), ecgqa_root, kept, [])
    samples = data.questions[args.wording]
    if not (data.reports if reports else samples):
        raise BenchError(f"no {'reports' if reports else 'questions'} for the {len(kept)} records")

    def where(i: int) -> dict[str, Any]:
        patient = _patient_dict(ptbxl.entries[i].patient) if args.patient == "labels" else None
        path = ptbxl.record_path(i, fs_src).with_suffix(".hea")
        return {"record": str(path), "ecg_id": i, "patient": patient}

    if reports:  # one report per record; the "answer" is the reference report
        question = bundle.prompt.report_question
        items = [
            {
                **where(i),
                "question": question,
                "answers": [ref],
                "template_id": None,
                "question_type": "report",
            }
            for i, ref in data.reports
        ]
        batch_question = args.batch_question or question
    else:
        items = [
            {
                **where(s.ecg_id),
                "question": s.question,
                "answers": list(s.answers),
                "template_id": s.template_id,
                "question_type": s.question_type,
            }
            for s in samples
        ]
        batch_question = args.batch_question or Counter(s.question for s in samples).most_common(1)[0][0]
    return Workload(
        checkpoint=str(Path(args.checkpoint).resolve()),
        bundle=str(Path(args.bundle).resolve()),
        threads=args.threads,
        verify_hashes=args.verify_hashes,
        torch_merge=args.torch_merge,
        torch_batch_size=args.torch_batch_size,
        max_new_tokens=bundle.generation.max_new_tokens,
        items=items,
        batch_question=batch_question,
        batch_records=[where(i) for i in kept],
        folds=list(HELD_OUT_FOLDS),
        n_skipped_records=skipped,
    )


def warm_page_cache(paths: Sequence[Path]) -> int:
    """Read every file under ``paths`` once so no backend pays the first disk read; returns bytes read."""
    total = 0
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            with f.open("rb") as fh:
                while chunk := fh.read(1 << 24):
                    total += len(chunk)
    return total


def run_worker(
    name: str, quant: str | None, workload_path: Path, threads: int, timeout_s: float, cache: bool = True
) -> dict[str, Any]:
    """Run one backend in a fresh interpreter; returns its result, or ``{"error": ...}`` when it failed."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        TORCH if quant is None else "runtime",
        "--workload",
        str(workload_path),
    ]
    if quant is not None:
        cmd += ["--quant", quant]
    if not cache:
        cmd += ["--no-cache"]
    env = {**os.environ, **WORKER_ENV, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    logger.info("running %s", name)
    t0 = time.time()
    try:
        proc = subprocess.run(
            [*cmd, "--t0", repr(t0)], capture_output=True, text=True, env=env, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARKER)]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-5:])
        return {"error": f"exit status {proc.returncode}: {tail}"}
    return json.loads(lines[-1][len(RESULT_MARKER) :])


def machine_info() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "packages": versions,
    }


# --- workers (one backend per process) ----------------------------------------------------------------


def ru_maxrss_mb() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in MB (KB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB.

    On Linux this is ``VmHWM`` of ``/proc/self/status``, the high-water mark of the process's own
    address space: ``ru_maxrss`` is not usable there, because execve() carries the peak RSS of the
    address space it replaces (the parent's, after fork or vfork) into the new process's
    ``ru_maxrss``, so a small worker started by a big parent would report the parent's peak.
    Elsewhere it falls back to ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return ru_maxrss_mb()


def _timed_answers(
    answer: Any, items: list[dict[str, Any]], after_warmup: Callable[[], None] | None = None
) -> tuple[float, list[float], list[str | None], list[str]]:
    """Warm-up on the first item (then ``after_warmup()``), then every item once: (warm-up s,
    latencies s, texts, errors)."""
    t = time.perf_counter()
    try:
        answer(items[0])
    except Exception as e:  # scored below like any other item
        logger.warning("warm-up failed: %s", e)
    first = time.perf_counter() - t
    if after_warmup is not None:
        after_warmup()
    seconds: list[float] = []
    texts: list[str | None] = []
    errors: list[str] = []
    for item in items:
        t = time.perf_counter()
        try:
            text: str | None = answer(item)
        except Exception as e:  # a failed item is reported and scored as wrong, never fatal
            text = None
            errors.append(f"{item['record']}: {type(e).__name__}: {e}")
        seconds.append(time.perf_counter() - t)
        texts.append(text)
    return first, seconds, texts, errors


def _record(item: dict[str, Any]) -> Any:
    """Read the item's record; the label table's patient features replace the header's when given."""
    from diagecg.io import read_record
    from diagecg.types import PatientInfo

    rec = read_record(item["record"])
    if item["patient"] is not None:
        rec.patient = PatientInfo(**item["patient"])
    return rec


def worker_runtime(w: Workload, quant: str, t_start: float, cache: bool = True) -> dict[str, Any]:
    t_imports = time.time()
    from diagecg.runtime.pipeline import ECG_CACHE_SIZE, DiagEcgPipeline

    t_load = time.time()
    pipe = DiagEcgPipeline.from_bundle(
        w.bundle,
        quant=quant,
        device="cpu",
        threads=w.threads,
        verify_hashes=w.verify_hashes,
        ecg_cache_size=ECG_CACHE_SIZE if cache else 0,
        reuse_prefix=cache,
    )
    t_ready = time.time()

    position = {id(item): k for k, item in enumerate(w.items)}
    refused: set[int] = set()

    def ask(item: dict[str, Any]) -> str:
        ans = pipe.answer(_record(item), item["question"])
        if ans.question_supported is False:  # outside the question catalogue: no answer, by design
            refused.add(position[id(item)])
        return ans.answer

    first, seconds, texts, errors = _timed_answers(ask, w.items, pipe.clear_caches)
    pipe.clear_caches()  # batch mode starts cold too

    def records() -> Iterator[Any]:  # read lazily: reading is part of the batch time
        for r in w.batch_records:
            try:
                yield _record(r)
            except DiagEcgError:
                yield r["record"]  # the pipeline reads it again and reports the error in the batch

    t = time.perf_counter()
    batch = list(pipe.answer_batch(records(), w.batch_question))
    batch_s = time.perf_counter() - t
    n_err = sum(isinstance(b, dict) for b in batch)
    return {
        "backend": "runtime",
        "quant": quant,
        "threads": w.threads,
        "cache": cache,
        **workload_latencies(seconds, w.items),
        "latency_items_ms": [t * 1e3 for t in seconds],
        "cold_start_s": t_ready - t_start,
        "startup_s": t_imports - t_start,
        "import_s": t_load - t_imports,
        "load_s": t_ready - t_load,
        "first_answer_s": first,
        "batch": {
            "n_records": len(batch),
            "n_errors": n_err,
            "wall_s": batch_s,
            "records_per_s": len(batch) / batch_s,
        },
        "peak_rss_mb": peak_rss_mb(),
        "ru_maxrss_mb": ru_maxrss_mb(),
        "predictions": texts,
        "errors": errors,
        "unsupported": sorted(refused),
        "model_bytes": Path(pipe.bundle.gguf_path(quant)).stat().st_size,
        "device": pipe.device.to_dict(),
        "torch_imported": sorted(m for m in TORCH_MODULES if m in sys.modules),
    }


def worker_torch(w: Workload, t_start: float) -> dict[str, Any]:
    t_imports = time.time()
    import numpy as np
    import torch
    from tokenizers import Tokenizer

    from diagecg.nn.checkpoint import load_tokenizer
    from diagecg.nn.llm_checkpoint import load_llm_checkpoint
    from diagecg.preprocess import model_inputs
    from diagecg.training.encode_records import encode_signals
    from diagecg.training.evaluate import LlmPredictor

    t_load = time.time()
    torch.set_num_threads(w.threads)
    model, _, meta, paths = load_llm_checkpoint(w.checkpoint, merge=w.torch_merge)
    model.eval()
    text_tok = Tokenizer.from_file(str(paths.text_tokenizer))
    ecg_tok, pre_cfg, _, _ = load_tokenizer(paths.ecg_tokenizer_dir)
    predictor = LlmPredictor(model, text_tok, meta, {}, {}, batch_size=1, max_new_tokens=w.max_new_tokens)
    t_ready = time.time()

    def answer(item: dict[str, Any]) -> str:
        rec = _record(item)
        x, f = model_inputs(rec, pre_cfg)  # (leads, samples), (measurements,) float32
        predictor.ecg_indices = {0: encode_signals(ecg_tok, x[None], f[None])[0]}  # (tokens,)
        predictor.patients = {0: rec.patient}
        return predictor([0], [item["question"]])[0]

    with torch.inference_mode():
        first, seconds, texts, errors = _timed_answers(answer, w.items)
        t = time.perf_counter()
        recs, signals, features = [], [], []
        for r in w.batch_records:
            try:
                rec = _record(r)
                x, f = model_inputs(rec, pre_cfg)  # (leads, samples), (measurements,)
            except DiagEcgError as e:
                logger.warning("batch: %s failed: %s", r["record"], e)
                continue
            recs.append(rec)
            signals.append(x)
            features.append(f)
        codes = encode_signals(ecg_tok, np.stack(signals), np.stack(features), batch_size=w.torch_batch_size)
        predictor.ecg_indices = dict(enumerate(codes))  # record -> (tokens,)
        predictor.patients = {k: r.patient for k, r in enumerate(recs)}
        predictor.batch_size = w.torch_batch_size
        batch = predictor(list(range(len(recs))), [w.batch_question] * len(recs))
        batch_s = time.perf_counter() - t
    return {
        "backend": TORCH,
        "quant": None,
        "threads": w.threads,
        "torch_threads": torch.get_num_threads(),
        **workload_latencies(seconds, w.items),
        "latency_items_ms": [t * 1e3 for t in seconds],
        "cold_start_s": t_ready - t_start,
        "startup_s": t_imports - t_start,
        "import_s": t_load - t_imports,
        "load_s": t_ready - t_load,
        "first_answer_s": first,
        "batch": {
            "n_records": len(w.batch_records),
            "n_errors": len(w.batch_records) - len(batch),
            "wall_s": batch_s,
            "records_per_s": len(w.batch_records) / batch_s,
            "batch_size": w.torch_batch_size,
        },
        "peak_rss_mb": peak_rss_mb(),
        "ru_maxrss_mb": ru_maxrss_mb(),
        "predictions": texts,
        "errors": errors,
        "model_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "merged_lora": w.torch_merge,
        "dtype": str(next(model.parameters()).dtype),
    }


def worker_main(kind: str, workload_path: Path, quant: str | None, t_start: float, cache: bool = True) -> int:
    w = Workload(**json.loads(workload_path.read_text()))
    if kind == "runtime":
        if quant is None:
            raise BenchError("--worker runtime needs --quant")
        result = worker_runtime(w, quant, t_start, cache)
    else:
        result = worker_torch(w, t_start)
    sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


# --- main -----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", type=Path, help="instruct checkpoint (`diagecg train instruct --out`)")
    p.add_argument("--bundle", type=Path, help="its bundle (`diagecg export --out`)")
    p.add_argument("--data", type=Path, help="shared data root (ptbxl/ and ecgqa/) or the ptbxl folder")
    p.add_argument(
        "--n-records", type=int, default=20, help="fold-10 records (seeded subset, as diagecg eval)"
    )
    p.add_argument(
        "--max-questions",
        type=int,
        default=None,
        help="questions asked (seeded subset of all questions on those records; with --task "
        "report, reports); default all",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for every backend; default the runtime's default_threads()",
    )
    p.add_argument("--quants", default="q8_0,q4_k_m", help="comma-separated GGUFs of the bundle to compare")
    p.add_argument(
        "--nocache-quants",
        default="q8_0",
        help="GGUFs also run with the ECG-code cache and prefix reuse off ('' = none)",
    )
    p.add_argument("--out", type=Path, default=None, help="results JSON")
    p.add_argument(
        "--task",
        choices=("qa", "report"),
        default="qa",
        help="qa: ECG-QA questions; report: one report per record (long answers, decode-bound)",
    )
    p.add_argument(
        "--wording",
        choices=("template", "paraphrase"),
        default="template",
        help="question wording: the training templates or the held-out paraphrases",
    )
    p.add_argument(
        "--ecgqa-noise",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add ECG-QA's released noise questions on the records (as diagecg eval)",
    )
    p.add_argument(
        "--patient",
        choices=("labels", "header"),
        default="labels",
        help="patient features in the prompt: from ptbxl_labels.csv (as training/eval) or only "
        "what the record header holds (PTB-XL headers hold none)",
    )
    p.add_argument(
        "--batch-question",
        default=None,
        help="the batch-mode question; default the most frequent question of the workload",
    )
    p.add_argument(
        "--torch-batch-size", type=int, default=8, help="PyTorch batch mode: prompts per generate()"
    )
    p.add_argument("--torch-merge", action="store_true", help="PyTorch: merge the LoRA adapter at load")
    p.add_argument(
        "--verify-hashes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="runtime: check the bundle's sha256 at load (the `diagecg infer` default)",
    )
    p.add_argument("--seed", type=int, default=0, help="record subset and question generation seed")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per backend")
    p.add_argument("--worker", choices=(TORCH, "runtime"), help=argparse.SUPPRESS)
    p.add_argument("--workload", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--quant", help=argparse.SUPPRESS)
    p.add_argument("--no-cache", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is None:
        for name in ("checkpoint", "bundle", "data"):
            if getattr(args, name) is None:
                p.error(f"--{name} is required")
        if args.n_records < 1:
            p.error(f"--n-records={args.n_records} is invalid: must be >= 1")
        if args.max_questions is not None and args.max_questions < 1:
            p.error(f"--max-questions={args.max_questions} is invalid: must be >= 1")
        if args.torch_batch_size < 1:
            p.error(f"--torch-batch-size={args.torch_batch_size} is invalid: must be >= 1")
        args.quant_list = [q.strip().lower() for q in args.quants.split(",") if q.strip()]
        if not args.quant_list:
            p.error("--quants is empty")
        args.nocache_list = [q.strip().lower() for q in args.nocache_quants.split(",") if q.strip()]
        from diagecg.runtime.device import resolve_threads

        try:
            args.threads = resolve_threads(args.threads)
        except ValueError as e:
            p.error(str(e))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return worker_main(args.worker, args.workload, args.quant, args.t0 or time.time(), not args.no_cache)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    t_run = time.time()
    try:
        quants = sorted({*args.quant_list, *args.nocache_list})
        bundle = check_model_pair(args.checkpoint, args.bundle, quants)
        workload = build_workload(args, bundle)
    except (BenchError, DiagEcgError, FileNotFoundError) as e:  # each names the file or field at fault
        print(f"error: {e}", file=sys.stderr)
        return 2
    logger.info(
        "%d questions on %d records; warming the page cache", len(workload.items), len(workload.batch_records)
    )
    meta_base = Path(args.checkpoint)
    warm_page_cache([meta_base, *(Path(bundle.gguf_path(q)) for q in quants), bundle.onnx_path])

    out_dir = args.out.parent if args.out else Path.cwd()
    out_dir.mkdir(parents=True, exist_ok=True)
    workload_path = out_dir / f".bench-workload-{os.getpid()}.json"
    workload_path.write_text(json.dumps(dataclasses.asdict(workload)))
    backends: dict[str, dict[str, Any]] = {}
    try:
        backends[TORCH] = run_worker(TORCH, None, workload_path, args.threads, args.timeout)
        for q in args.quant_list:
            backends[RUNTIME_PREFIX + q] = run_worker(
                RUNTIME_PREFIX + q, q, workload_path, args.threads, args.timeout
            )
        for q in args.nocache_list:
            name = RUNTIME_PREFIX + q + NOCACHE_SUFFIX
            backends[name] = run_worker(name, q, workload_path, args.threads, args.timeout, cache=False)
    finally:
        workload_path.unlink(missing_ok=True)

    gold = [item["answers"] for item in workload.items]
    report = {
        "schema_version": SCHEMA_VERSION,
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("worker", "workload", "quant", "t0", "no_cache")
        },
        "machine": machine_info(),
        "workload": {
            "n_records": len(workload.batch_records),
            "n_questions": len(workload.items),
            "n_skipped_records": workload.n_skipped_records,
            "folds": workload.folds,
            "task": args.task,
            "wording": args.wording,
            "batch_question": workload.batch_question,
            "max_new_tokens": workload.max_new_tokens,
            "patient": args.patient,
            "questions": [
                {k: it[k] for k in ("ecg_id", "question", "answers", "template_id", "question_type")}
                for it in workload.items
            ],
        },
        "backends": backends,
        "comparison": compare(backends, gold, [item["record"] for item in workload.items]),
        "targets": {
            "speedup_first": TARGET_SPEEDUP_FIRST,
            "speedup_followup": TARGET_SPEEDUP_FOLLOWUP,
            "memory_fraction": TARGET_MEMORY_FRACTION,
            "accuracy_points": TARGET_ACCURACY_POINTS,
            "accuracy_quants": list(ACCURACY_TARGET_QUANTS),
        },
        "wall_s": time.time() - t_run,
    }
    print(format_table(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        print(f"\nresults: {args.out}")
    return 1 if any("error" in r for r in backends.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

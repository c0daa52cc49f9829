"""Stage 1: train the ECG tokenizer (lead-wise encoder + FSQ + decoder) on reconstruction,
with a supervised diagnostic summary head.

DiagECG (arXiv 2508.15338) trains its ECG tokenizer as an FSQ autoencoder
(FSQ: arXiv 2309.15505): the loss is the MSE between the preprocessed
(z-scored) signal and its reconstruction from the quantised codes. With
``summary=True`` (the default) the same encoder also feeds the summary head of
``diagecg.nn.summary``: one FSQ token per finding (the PTB-XL superclasses and
every SCP statement with ``summary_min_positives`` training positives), trained
with binary cross-entropy on the quantised value beside the reconstruction, so
the tokens the LLM reads carry what a diagnosis needs. ``augment`` draws a new
gain and noise level in mV for every training record, before the z-score and the
measurements, as other devices would record it. ``summary=False, augment=False``
is the paper's tokenizer. This is a linear script (STYLE R20): data, model,
optimiser, loop, checkpoint.

    diagecg train tokenizer --data shared/data --out runs/tokenizer --set steps=3000

The held-out folds (default: PTB-XL fold 9) give the reconstruction MSE in
z-scored units (predicting zeros scores about 1.0), codebook usage (fraction
of the ``prod(levels)`` codes used, and the perplexity of the index histogram)
and each finding's AUC from its summary token.
Fold 10 is the test fold: this stage refuses to touch it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from diagecg.config import (
    ConfigMixin,
    EncoderConfig,
    FSQConfig,
    PreprocessConfig,
    SummaryConfig,
)
from diagecg.constants import RUN_SUMMARY, ManifestKey
from diagecg.datasets import seeded_subset
from diagecg.datasets.ptbxl import (
    SUPERCLASSES,
    PtbxlDataset,
    finding_labels,
    finding_weights,
    frequent_findings,
)
from diagecg.errors import ConfigError, DiagEcgError
from diagecg.features import FEATURE_NAMES, MEASURE_TOKEN_EDGES
from diagecg.nn.checkpoint import (
    has_checkpoint,
    load_optimizer_state,
    load_weights,
    read_configs,
    read_trainer_state,
    save_checkpoint,
)
from diagecg.nn.ecg_tokenizer import EcgTokenizer
from diagecg.preprocess import measure_signal, zscore
from diagecg.scoring import roc_auc
from diagecg.training.configs import TokenizerTrainConfig
from diagecg.training.device import resolve_device
from diagecg.training.ecg_data import load_signals, source_fs_hz

logger = logging.getLogger(__name__)


def _lr_at(cfg: TokenizerTrainConfig, step: int) -> float:
    """Linear warmup, then cosine decay to lr * min_lr_ratio at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def code_usage(indices: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Codebook usage of a batch of indices: fraction of codes used, count, and histogram perplexity."""
    counts = torch.bincount(indices.reshape(-1).cpu(), minlength=codebook_size).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    used = int((counts > 0).sum())
    return {"codes_used": used, "code_usage": used / codebook_size, "perplexity": math.exp(entropy)}


def augment_mv(x_mv: np.ndarray, rng: np.random.Generator, fs_hz: float = 100.0,
               devices: bool = True) -> np.ndarray:
    """Random recording conditions of other devices, in mV, on (B, leads, n) signals at ``fs_hz``:
    a gain per record (x0.75-1.33) and per lead (x0.9-1.1); white noise of up to 0.04 mV; for half the
    records a narrower bandwidth (a 2-4 sample moving average: other recorders' low-pass filters);
    for a third, residual baseline wander (up to 0.3 mV at 0.05-0.5 Hz); for a fifth, a burst of
    electrode noise (up to 0.2 mV, 0.5-2 s) on one lead. Mains interference is not simulated at the
    model rate: the runtime's anti-alias resampling removes 50/60 Hz before the model sees a record.
    ``devices=False`` applies the gain and the white noise only. Returns float32 of the same shape."""
    B, L, n = x_mv.shape
    gain = np.exp(rng.uniform(math.log(0.75), math.log(4 / 3), size=(B, 1, 1)))
    gain = gain * rng.uniform(0.9, 1.1, (B, L, 1))
    x = x_mv * gain
    t = np.arange(n) / fs_hz
    for b in range(B if devices else 0):
        if rng.random() < 0.5:
            kernel = np.full(int(rng.integers(2, 5)), 1.0)
            x[b] = np.stack([np.convolve(v, kernel / kernel.size, mode="same") for v in x[b]])
        if rng.random() < 1 / 3:
            f = rng.uniform(0.05, 0.5)
            x[b] += rng.uniform(0, 0.3) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) \
                * rng.uniform(0.5, 1.0, (L, 1))
        if rng.random() < 0.2:
            lead, dur = int(rng.integers(L)), int(rng.uniform(0.5, 2.0) * fs_hz)
            start = int(rng.integers(0, max(1, n - dur)))
            x[b, lead, start:start + dur] += rng.normal(size=min(dur, n - start)) * rng.uniform(0.05, 0.2)
    noise = rng.normal(size=x_mv.shape) * rng.uniform(0.0, 0.04, size=(B, 1, 1))
    return (x + noise).astype(np.float32)


def summary_auc(logits: np.ndarray, labels: np.ndarray, findings: tuple[str, ...]) -> dict[str, Any]:
    """Held-out AUC of each finding's summary logit, and macro means (superclasses / all)."""
    labelled = ~np.isnan(labels)  # a statement of a record without statement labels is unknown, not 0
    per = {c: roc_auc(labels[labelled[:, k], k], logits[labelled[:, k], k]) for k, c in enumerate(findings)}
    sup = [per[c] for c in SUPERCLASSES if c in per and not math.isnan(per[c])]
    known = [v for v in per.values() if not math.isnan(v)]
    return {"summary_auc_superclass": float(np.mean(sup)) if sup else math.nan,
            "summary_auc_macro": float(np.mean(known)) if known else math.nan,
            "summary_auc": {c: (None if math.isnan(v) else round(v, 4)) for c, v in per.items()}}


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of (B, F) logits against (B, F) 1/0/NaN labels, weighted by (B, F)
    ``weights`` (``ptbxl.finding_weights``: 0 where the label is unknown) and averaged over the weight:
    an unknown label (NaN) adds nothing, and is never read as 0."""
    known = ~torch.isnan(labels)
    bce = F.binary_cross_entropy_with_logits(logits, torch.where(known, labels, 0.0), reduction="none")
    w = torch.where(known, weights, 0.0)
    return (bce * w).sum() / w.sum().clamp_min(1e-6)


@torch.no_grad()
def evaluate(model: EcgTokenizer, signals: torch.Tensor, batch_size: int, device: torch.device,
             features: torch.Tensor | None = None, labels: np.ndarray | None = None) -> dict[str, Any]:
    """Reconstruction MSE/MAE (z-scored units) and codebook usage over ``signals`` (N, leads, samples);
    with a summary head, the held-out AUC of every finding (``labels`` (N, F))."""
    was_training = model.training
    model.eval()
    se = ae = 0.0
    all_indices, all_logits = [], []
    for i in range(0, len(signals), batch_size):
        x = signals[i: i + batch_size].to(device)
        f = None if features is None else features[i: i + batch_size].to(device)
        recon, indices, _, logits = model(x, f)
        se += F.mse_loss(recon.float(), x, reduction="sum").item()
        ae += F.l1_loss(recon.float(), x, reduction="sum").item()
        all_indices.append(indices.cpu())
        if logits is not None:
            all_logits.append(logits.float().cpu())
    model.train(was_training)
    n = signals.numel()
    out: dict[str, Any] = {"mse": se / n, "mae": ae / n,
                           **code_usage(torch.cat(all_indices), model.codebook_size)}
    if all_logits and labels is not None and model.summary_cfg is not None:
        out.update(summary_auc(torch.cat(all_logits).numpy(), labels, model.summary_cfg.findings))
    return out


def main(cfg: TokenizerTrainConfig) -> dict[str, Any]:
    """Train the ECG tokenizer; write the checkpoint and ``RUN_SUMMARY`` into ``cfg.out_dir``.

    Returns:
        The run summary (also written as JSON).

    Raises:
        FileNotFoundError: no PTB-XL data under ``cfg.data_dir``.
        ConfigError: ``out_dir`` holds a checkpoint but ``resume`` is off; ``device`` is CUDA without a GPU.
        ValueError: no usable records.
        DiagEcgError: the loss became NaN/inf.
    """
    t_start = time.time()
    out_dir = Path(cfg.out_dir)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device, "TokenizerTrainConfig.device")
    use_amp = cfg.amp and device.type == "cuda"

    # --- configs: the preset, or the checkpoint's own on resume (STYLE R3) ---
    pre_cfg, enc_cfg, fsq_cfg = cfg.model_configs()
    resuming = cfg.resume and has_checkpoint(out_dir)
    stored_summary: SummaryConfig | None = None
    if resuming:
        stored = read_configs(out_dir)
        stored_cfgs = (PreprocessConfig.from_dict(stored[ManifestKey.PREPROCESS]),
                       EncoderConfig.from_dict(stored[ManifestKey.ENCODER]),
                       FSQConfig.from_dict(stored[ManifestKey.FSQ]))
        if stored_cfgs != (pre_cfg, enc_cfg, fsq_cfg):
            logger.warning("resume: using the architecture and preprocessing stored in %s, "
                           "not the requested ones", out_dir)
        pre_cfg, enc_cfg, fsq_cfg = stored_cfgs
        if ManifestKey.SUMMARY in stored:
            stored_summary = SummaryConfig.from_dict(stored[ManifestKey.SUMMARY])
    elif has_checkpoint(out_dir):
        raise ConfigError(f"{out_dir} already holds a checkpoint: pass --resume to continue it, or choose "
                          f"another --out")
    elif cfg.resume:
        logger.info("resume: no checkpoint in %s yet, starting from scratch", out_dir)

    # --- data ---
    ptbxl = PtbxlDataset.from_data_dir(cfg.data_dir, full=cfg.ptbxl_full)
    fs_src = source_fs_hz(pre_cfg.fs_hz)
    train_ids = seeded_subset(ptbxl.ids(cfg.train_folds, fs_hz=fs_src), cfg.max_train_records, cfg.seed)
    eval_ids = seeded_subset(ptbxl.ids(cfg.eval_folds, fs_hz=fs_src), cfg.max_eval_records, cfg.seed)
    if not train_ids or not eval_ids:
        raise ValueError(f"no {fs_src} Hz records in train folds {cfg.train_folds} ({len(train_ids)}) "
                         f"or eval folds {cfg.eval_folds} ({len(eval_ids)}) under {ptbxl.root}")
    end_step = cfg.steps if cfg.stop_at_step is None else cfg.stop_at_step
    # resumed at or past its end (a run stopped at stop_at_step, finished): nothing to train, so the
    # training records are not read again (minutes for ptbxl_full); their counts come from the ids
    finished = resuming and int(read_trainer_state(out_dir)["step"]) >= end_step
    load_ids = train_ids[: cfg.batch_size] if finished else train_ids
    train_set = load_signals(ptbxl, load_ids, pre_cfg, progress=cfg.progress, keep_mv=cfg.augment)
    eval_set = load_signals(ptbxl, eval_ids, pre_cfg, progress=cfg.progress)
    if not train_set.ids or not eval_set.ids:
        raise ValueError(f"every record failed validation ({len(train_set.skipped)} train, "
                         f"{len(eval_set.skipped)} eval skipped)")
    # (N, leads, samples) float32, z-scored; small enough to sit on the GPU whole (1,600 x 12 x 1,000: 77 MB)
    train_x = torch.from_numpy(train_set.signals).to(device)
    eval_x = torch.from_numpy(eval_set.signals)
    logger.info("tokenizer data: %d train / %d eval records at %d Hz (%d skipped)", len(train_x), len(eval_x),
                pre_cfg.fs_hz, len(train_set.skipped) + len(eval_set.skipped))

    # --- summary findings: the superclasses and the statements frequent enough to learn ---
    summary_cfg = stored_summary
    if summary_cfg is None and cfg.summary and not resuming:
        findings = frequent_findings(ptbxl, train_set.ids, cfg.summary_min_positives)
        names = tuple(MEASURE_TOKEN_EDGES) if cfg.measure_tokens else ()
        summary_cfg = SummaryConfig(findings=findings, levels=cfg.summary_levels, features=FEATURE_NAMES,
                                    hidden=cfg.summary_hidden, measure_tokens=names,
                                    measure_edges=tuple(MEASURE_TOKEN_EDGES[k] for k in names))
    if summary_cfg is not None and summary_cfg.features != FEATURE_NAMES:
        raise ValueError(f"{out_dir} was trained on other measurements than diagecg.measure computes now "
                         f"({len(summary_cfg.features)} vs {len(FEATURE_NAMES)}); train a new tokenizer")
    train_y = eval_y = train_w = None
    if summary_cfg is not None:
        # NaN where a statement is unknown (masked in the loss); weights correct the AF-enriched subset
        findings = summary_cfg.findings
        train_y = torch.tensor(finding_labels(ptbxl, train_set.ids, findings), dtype=torch.float32)
        train_w = torch.from_numpy(finding_weights(ptbxl, train_set.ids, findings)).float()
        logger.info("summary labels: %d of %d training records have statement labels (the others train "
                    "the superclasses only)", len(ptbxl.statements_labelled_ids(train_set.ids)),
                    len(train_set.ids))
        eval_y = np.array(finding_labels(ptbxl, eval_set.ids, summary_cfg.findings), dtype=np.float32)
        logger.info("summary: %d findings x %d levels (%s)", summary_cfg.n_tokens, summary_cfg.levels,
                    ", ".join(summary_cfg.findings))
    eval_f = torch.from_numpy(eval_set.features) if summary_cfg is not None else None

    # --- model and optimiser ---
    torch.manual_seed(cfg.seed)
    model = EcgTokenizer(enc_cfg, fsq_cfg, summary_cfg).to(device)
    if model.summary is not None:
        model.summary.set_feature_stats(torch.from_numpy(train_set.features))
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = 0
    history: list[dict[str, Any]] = []
    if resuming:
        load_weights(out_dir, model)
        load_optimizer_state(out_dir, optimizer)
        state = read_trainer_state(out_dir)
        step = int(state["step"])
        history = list(state["extra"].get("history", []))
        logger.info("resumed from %s at step %d", out_dir, step)
    configs: dict[str, ConfigMixin] = {ManifestKey.PREPROCESS: pre_cfg, ManifestKey.ENCODER: enc_cfg,
                                       ManifestKey.FSQ: fsq_cfg, ManifestKey.TRAINING: cfg}
    if summary_cfg is not None:
        configs[ManifestKey.SUMMARY] = summary_cfg

    def checkpoint() -> None:
        save_checkpoint(out_dir, model, configs, step, optimizer,
                        extra={"history": history, "seed": cfg.seed})

    # --- loop ---
    start_step = step
    if step == 0:  # the untrained model's scores, as the reference point of the run
        first = evaluate(model, eval_x, cfg.batch_size, device, eval_f, eval_y)
        history.append({"step": 0, "train_loss": None, **{f"eval_{k}": v for k, v in first.items()}})
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="tokenizer", unit="step", disable=not cfg.progress)
    recent: list[float] = []
    train_time = 0.0
    last_eval: dict[str, float] | None = None
    while step < end_step:
        t0 = time.time()
        # batch drawn from (seed, step) only, so a resumed run sees the same batches
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        batch_idx = torch.randperm(len(train_x), generator=gen)[: cfg.batch_size]
        # ... and the same dropout masks (summary head): the global generator is not in the checkpoint
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        f = None
        if cfg.augment:  # new recording conditions in mV, then the same z-score and measurements as always
            assert train_set.prepared_mv is not None
            mv = augment_mv(train_set.prepared_mv[batch_idx.numpy()], np.random.default_rng([cfg.seed, step]),
                            pre_cfg.fs_hz)
            x = torch.from_numpy(zscore(mv, pre_cfg)).to(device)  # (B, leads, samples)
            if summary_cfg is not None:
                measured = np.stack([measure_signal(m, pre_cfg.fs_hz, pre_cfg) for m in mv])  # one rate
                f = torch.from_numpy(measured).to(device)
        else:
            x = train_x[batch_idx.to(device)]  # (B, leads, samples)
            if summary_cfg is not None:
                f = torch.from_numpy(train_set.features[batch_idx.numpy()]).to(device)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(cfg, step)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            recon, _, _, logits = model(x, f)
        recon = recon.float()
        loss = F.mse_loss(recon, x)
        if cfg.l1_weight > 0:
            loss = loss + cfg.l1_weight * F.l1_loss(recon, x)
        if logits is not None and train_y is not None and train_w is not None and cfg.summary_weight > 0:
            y, w = train_y[batch_idx].to(device), train_w[batch_idx].to(device)
            loss = loss + cfg.summary_weight * masked_bce(logits.float(), y, w)
        if not torch.isfinite(loss):
            raise DiagEcgError(f"tokenizer training diverged: loss {loss.item()} at step {step} "
                               f"(try a lower lr than {cfg.lr})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        train_time += time.time() - t0
        recent.append(loss.item())
        bar.update(1)
        if step % cfg.log_every == 0:
            bar.set_postfix(loss=f"{np.mean(recent[-cfg.log_every:]):.4f}", lr=f"{_lr_at(cfg, step - 1):.2e}")
        if step % cfg.eval_every == 0 or step == end_step:
            last_eval = evaluate(model, eval_x, cfg.batch_size, device, eval_f, eval_y)
            history.append({"step": step, "train_loss": float(np.mean(recent[-cfg.eval_every:])),
                            **{f"eval_{k}": v for k, v in last_eval.items()}})
            logger.info("step %d: train loss %.4f, eval mse %.4f, codes used %d (%.1f%%), perplexity %.0f%s",
                        step, history[-1]["train_loss"], last_eval["mse"], last_eval["codes_used"],
                        100 * last_eval["code_usage"], last_eval["perplexity"],
                        f", summary AUC superclasses {last_eval['summary_auc_superclass']:.3f} "
                        f"all {last_eval['summary_auc_macro']:.3f}"
                        if "summary_auc_macro" in last_eval else "")
            checkpoint()
    bar.close()
    if last_eval is None:  # resumed at or past the end: nothing trained, still report the model
        last_eval = evaluate(model, eval_x, cfg.batch_size, device, eval_f, eval_y)

    steps_run = step - start_step
    summary: dict[str, Any] = {
        "stage": "tokenizer",
        "preset": cfg.preset,
        "out_dir": str(out_dir),
        "device": str(device),
        "step": step,
        "steps_this_run": steps_run,
        "resumed_from_step": start_step if resuming else None,
        "steps_per_s": steps_run / train_time if train_time > 0 else None,
        "wall_s": time.time() - t_start,
        "n_params": n_params,
        "n_train_records": len(train_ids) - len(train_set.skipped) if finished else len(train_x),
        "n_train_statements_labelled": len(ptbxl.statements_labelled_ids(
            train_ids if finished else train_set.ids)),
        "n_eval_records": len(eval_x),
        "n_skipped_records": len(train_set.skipped) + len(eval_set.skipped),
        "n_frames": enc_cfg.n_frames,
        "codebook_size": fsq_cfg.codebook_size,
        "n_summary_tokens": model.n_summary,
        "summary_findings": list(summary_cfg.findings) if summary_cfg is not None else [],
        "train_loss_first": recent[0] if recent else None,
        "train_loss_last": float(np.mean(recent[-cfg.log_every:])) if recent else None,
        "eval": last_eval,
        "eval_zero_mse": float(eval_x.pow(2).mean()),  # MSE of predicting all zeros, for scale
        "eval_initial_mse": history[0]["eval_mse"] if history else None,  # untrained model
        "best_eval_mse": min((h["eval_mse"] for h in history if h["step"] > 0), default=last_eval["mse"]),
        "history": history,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RUN_SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary

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
is the paper's tokenizer. ``main`` reads top to bottom as named steps
(conventions: scripts read top to bottom): configs, data, model, loop, summary.

    diagecg train tokenizer --data shared/data --out runs/tokenizer --set steps=3000

The held-out folds (default: PTB-XL fold 9) give the reconstruction MSE in
z-scored units (predicting zeros scores about 1.0), codebook usage (fraction
of the ``prod(levels)`` codes used, and the perplexity of the index histogram)
and each finding's AUC from its summary token.
Fold 10 is the test fold: this stage refuses to touch it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
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
from diagecg.constants import ManifestKey
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
from diagecg.training.ecg_data import LoadedRecords, load_signals, source_fs_hz
from diagecg.training.llm_model import write_summary
from diagecg.training.llm_trainer import lr_at

logger = logging.getLogger(__name__)


def _lr_at(cfg: TokenizerTrainConfig, step: int) -> float:
    """The learning rate of ``step``: the LLM stages' schedule (linear warmup, then cosine decay to
    ``lr * min_lr_ratio`` at the last step)."""
    return lr_at(step, steps=cfg.steps, lr=cfg.lr, warmup=cfg.warmup_steps, min_ratio=cfg.min_lr_ratio)


def code_usage(indices: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Codebook usage of a batch of indices: fraction of codes used, count, and histogram perplexity."""
    counts = torch.bincount(indices.reshape(-1).cpu(), minlength=codebook_size).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    used = int((counts > 0).sum())
    return {"codes_used": used, "code_usage": used / codebook_size, "perplexity": math.exp(entropy)}


def augment_mv(
    x_mv: np.ndarray, rng: np.random.Generator, fs_hz: float = 100.0, devices: bool = True
) -> np.ndarray:
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
            x[b] += (
                rng.uniform(0, 0.3)
                * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
                * rng.uniform(0.5, 1.0, (L, 1))
            )
        if rng.random() < 0.2:
            lead, dur = int(rng.integers(L)), int(rng.uniform(0.5, 2.0) * fs_hz)
            start = int(rng.integers(0, max(1, n - dur)))
            x[b, lead, start : start + dur] += rng.normal(size=min(dur, n - start)) * rng.uniform(0.05, 0.2)
    noise = rng.normal(size=x_mv.shape) * rng.uniform(0.0, 0.04, size=(B, 1, 1))
    return (x + noise).astype(np.float32)


def summary_auc(logits: np.ndarray, labels: np.ndarray, findings: tuple[str, ...]) -> dict[str, Any]:
    """Held-out AUC of each finding's summary logit, and macro means (superclasses / all)."""
    labelled = ~np.isnan(labels)  # a statement of a record without statement labels is unknown, not 0
    per = {c: roc_auc(labels[labelled[:, k], k], logits[labelled[:, k], k]) for k, c in enumerate(findings)}
    sup = [per[c] for c in SUPERCLASSES if c in per and not math.isnan(per[c])]
    known = [v for v in per.values() if not math.isnan(v)]
    return {
        "summary_auc_superclass": float(np.mean(sup)) if sup else math.nan,
        "summary_auc_macro": float(np.mean(known)) if known else math.nan,
        "summary_auc": {c: (None if math.isnan(v) else round(v, 4)) for c, v in per.items()},
    }


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of (B, F) logits against (B, F) 1/0/NaN labels, weighted by (B, F)
    ``weights`` (``ptbxl.finding_weights``: 0 where the label is unknown) and averaged over the weight:
    an unknown label (NaN) adds nothing, and is never read as 0."""
    known = ~torch.isnan(labels)
    bce = F.binary_cross_entropy_with_logits(logits, torch.where(known, labels, 0.0), reduction="none")
    w = torch.where(known, weights, 0.0)
    return (bce * w).sum() / w.sum().clamp_min(1e-6)


@torch.no_grad()
def evaluate(
    model: EcgTokenizer,
    signals: torch.Tensor,
    batch_size: int,
    device: torch.device,
    features: torch.Tensor | None = None,
    labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """Reconstruction MSE/MAE (z-scored units) and codebook usage over ``signals`` (N, leads, samples);
    with a summary head, the held-out AUC of every finding (``labels`` (N, F))."""
    was_training = model.training
    model.eval()
    se = ae = 0.0
    all_indices, all_logits = [], []
    for i in range(0, len(signals), batch_size):
        x = signals[i : i + batch_size].to(device)
        f = None if features is None else features[i : i + batch_size].to(device)
        recon, indices, _, logits = model(x, f)
        se += F.mse_loss(recon.float(), x, reduction="sum").item()
        ae += F.l1_loss(recon.float(), x, reduction="sum").item()
        all_indices.append(indices.cpu())
        if logits is not None:
            all_logits.append(logits.float().cpu())
    model.train(was_training)
    n = signals.numel()
    out: dict[str, Any] = {
        "mse": se / n,
        "mae": ae / n,
        **code_usage(torch.cat(all_indices), model.codebook_size),
    }
    if all_logits and labels is not None and model.summary_cfg is not None:
        out.update(summary_auc(torch.cat(all_logits).numpy(), labels, model.summary_cfg.findings))
    return out


@dataclass(frozen=True)
class ModelConfigs:
    """The preprocessing and architecture a run trains: the preset's, or on resume the checkpoint's own.

    ``stored_summary`` is the resumed checkpoint's summary head (None for a fresh run or a checkpoint
    without one); ``resuming`` says whether ``out_dir`` is continued.
    """

    preprocess: PreprocessConfig
    encoder: EncoderConfig
    fsq: FSQConfig
    stored_summary: SummaryConfig | None
    resuming: bool


@dataclass
class TokenizerData:
    """The records of a run: ids of both splits, the loaded records and their signals as tensors.

    ``finished`` marks a run resumed at or past its end, for which only one batch of training records
    is loaded (its counts come from the ids).
    """

    ptbxl: PtbxlDataset
    train_ids: list[int]
    eval_ids: list[int]
    train_set: LoadedRecords
    eval_set: LoadedRecords
    train_x: torch.Tensor  # (N, leads, samples) float32, z-scored, on the device
    eval_x: torch.Tensor  # (M, leads, samples) float32, z-scored, on the CPU
    finished: bool


@dataclass
class FindingTargets:
    """The summary head's config and the findings' labels and weights (all None without a summary head)."""

    summary: SummaryConfig | None
    train_y: torch.Tensor | None = None  # (N, F) 1/0/NaN
    train_w: torch.Tensor | None = None  # (N, F) loss weights
    eval_y: np.ndarray | None = None  # (M, F) 1/0/NaN
    eval_f: torch.Tensor | None = None  # (M, features) measurements of the eval records


@dataclass
class LoopResult:
    """What the training loop reports: the step reached, where it started, and the losses it saw."""

    step: int
    start_step: int
    train_time: float
    recent: list[float]  # the training loss of every step of this run
    last_eval: dict[str, Any]


def start_device(cfg: TokenizerTrainConfig) -> torch.device:
    """Apply ``num_threads`` and resolve the training device.

    Raises:
        ConfigError: ``device`` is CUDA without a GPU.
    """
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    return resolve_device(cfg.device, "TokenizerTrainConfig.device")


def resolve_configs(cfg: TokenizerTrainConfig, out_dir: Path) -> ModelConfigs:
    """The preset's configs, or on resume the checkpoint's own (conventions: self-describing artifacts).

    Raises:
        ConfigError: ``out_dir`` holds a checkpoint but ``resume`` is off.
    """
    pre_cfg, enc_cfg, fsq_cfg = cfg.model_configs()
    resuming = cfg.resume and has_checkpoint(out_dir)
    stored_summary: SummaryConfig | None = None
    if resuming:
        stored = read_configs(out_dir)
        stored_cfgs = (
            PreprocessConfig.from_dict(stored[ManifestKey.PREPROCESS]),
            EncoderConfig.from_dict(stored[ManifestKey.ENCODER]),
            FSQConfig.from_dict(stored[ManifestKey.FSQ]),
        )
        if stored_cfgs != (pre_cfg, enc_cfg, fsq_cfg):
            logger.warning(
                "resume: using the architecture and preprocessing stored in %s, not the requested ones",
                out_dir,
            )
        pre_cfg, enc_cfg, fsq_cfg = stored_cfgs
        if ManifestKey.SUMMARY in stored:
            stored_summary = SummaryConfig.from_dict(stored[ManifestKey.SUMMARY])
    elif has_checkpoint(out_dir):
        raise ConfigError(
            f"{out_dir} already holds a checkpoint: pass --resume to continue it, or choose another --out"
        )
    elif cfg.resume:
        logger.info("resume: no checkpoint in %s yet, starting from scratch", out_dir)
    return ModelConfigs(pre_cfg, enc_cfg, fsq_cfg, stored_summary, resuming)


def end_step(cfg: TokenizerTrainConfig) -> int:
    """The step this run stops at: ``steps``, or ``stop_at_step`` when set."""
    return cfg.steps if cfg.stop_at_step is None else cfg.stop_at_step


def load_data(
    cfg: TokenizerTrainConfig, configs: ModelConfigs, out_dir: Path, device: torch.device
) -> TokenizerData:
    """Read and preprocess the training and held-out PTB-XL records (training signals on the device).

    Raises:
        FileNotFoundError: no PTB-XL data under ``cfg.data_dir``.
        ValueError: no records at the model's rate in a split, or every record failed validation.
    """
    pre_cfg = configs.preprocess
    ptbxl = PtbxlDataset.from_data_dir(cfg.data_dir, full=cfg.ptbxl_full)
    fs_src = source_fs_hz(pre_cfg.fs_hz)
    train_ids = seeded_subset(ptbxl.ids(cfg.train_folds, fs_hz=fs_src), cfg.max_train_records, cfg.seed)
    eval_ids = seeded_subset(ptbxl.ids(cfg.eval_folds, fs_hz=fs_src), cfg.max_eval_records, cfg.seed)
    if not train_ids or not eval_ids:
        raise ValueError(
            f"no {fs_src} Hz records in train folds {cfg.train_folds} ({len(train_ids)}) "
            f"or eval folds {cfg.eval_folds} ({len(eval_ids)}) under {ptbxl.root}"
        )
    # resumed at or past its end (a run stopped at stop_at_step, finished): nothing to train, so the
    # training records are not read again (minutes for ptbxl_full); their counts come from the ids
    finished = configs.resuming and int(read_trainer_state(out_dir)["step"]) >= end_step(cfg)
    load_ids = train_ids[: cfg.batch_size] if finished else train_ids
    train_set = load_signals(ptbxl, load_ids, pre_cfg, progress=cfg.progress, keep_mv=cfg.augment)
    eval_set = load_signals(ptbxl, eval_ids, pre_cfg, progress=cfg.progress)
    if not train_set.ids or not eval_set.ids:
        raise ValueError(
            f"every record failed validation ({len(train_set.skipped)} train, "
            f"{len(eval_set.skipped)} eval skipped)"
        )
    # (N, leads, samples) float32, z-scored; small enough to sit on the GPU whole (1,600 x 12 x 1,000: 77 MB)
    train_x = torch.from_numpy(train_set.signals).to(device)
    eval_x = torch.from_numpy(eval_set.signals)
    logger.info(
        "tokenizer data: %d train / %d eval records at %d Hz (%d skipped)",
        len(train_x),
        len(eval_x),
        pre_cfg.fs_hz,
        len(train_set.skipped) + len(eval_set.skipped),
    )
    return TokenizerData(ptbxl, train_ids, eval_ids, train_set, eval_set, train_x, eval_x, finished)


def finding_targets(
    cfg: TokenizerTrainConfig, configs: ModelConfigs, data: TokenizerData, out_dir: Path
) -> FindingTargets:
    """The summary head's findings (the superclasses and the statements frequent enough to learn; a
    resumed run keeps its checkpoint's) and their labels.

    Raises:
        ValueError: the checkpoint was trained on other measurements than ``diagecg.features`` computes.
    """
    summary_cfg = configs.stored_summary
    ptbxl, train_set = data.ptbxl, data.train_set
    if summary_cfg is None and cfg.summary and not configs.resuming:
        findings = frequent_findings(ptbxl, train_set.ids, cfg.summary_min_positives)
        names = tuple(MEASURE_TOKEN_EDGES) if cfg.measure_tokens else ()
        summary_cfg = SummaryConfig(
            findings=findings,
            levels=cfg.summary_levels,
            features=FEATURE_NAMES,
            hidden=cfg.summary_hidden,
            measure_tokens=names,
            measure_edges=tuple(MEASURE_TOKEN_EDGES[k] for k in names),
        )
    if summary_cfg is None:
        return FindingTargets(None)
    if summary_cfg.features != FEATURE_NAMES:
        raise ValueError(
            f"{out_dir} was trained on other measurements than diagecg.features computes now "
            f"({len(summary_cfg.features)} vs {len(FEATURE_NAMES)}); train a new tokenizer"
        )
    # NaN where a statement is unknown (masked in the loss); weights correct the AF-enriched subset
    findings = summary_cfg.findings
    train_y = torch.tensor(finding_labels(ptbxl, train_set.ids, findings), dtype=torch.float32)
    train_w = torch.from_numpy(finding_weights(ptbxl, train_set.ids, findings)).float()
    logger.info(
        "summary labels: %d of %d training records have statement labels (the others train "
        "the superclasses only)",
        len(ptbxl.statements_labelled_ids(train_set.ids)),
        len(train_set.ids),
    )
    eval_y = np.array(finding_labels(ptbxl, data.eval_set.ids, findings), dtype=np.float32)
    logger.info(
        "summary: %d findings x %d levels (%s)", summary_cfg.n_tokens, summary_cfg.levels, ", ".join(findings)
    )
    return FindingTargets(summary_cfg, train_y, train_w, eval_y, torch.from_numpy(data.eval_set.features))


def build_model(
    cfg: TokenizerTrainConfig,
    configs: ModelConfigs,
    summary_cfg: SummaryConfig | None,
    data: TokenizerData,
    device: torch.device,
) -> tuple[EcgTokenizer, torch.optim.Optimizer]:
    """The tokenizer, seeded with ``cfg.seed`` (its summary head normalised by the training records'
    measurements), and its AdamW optimiser."""
    torch.manual_seed(cfg.seed)
    model = EcgTokenizer(configs.encoder, configs.fsq, summary_cfg).to(device)
    if model.summary is not None:
        model.summary.set_feature_stats(torch.from_numpy(data.train_set.features))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return model, optimizer


def resume_state(
    out_dir: Path, model: EcgTokenizer, optimizer: torch.optim.Optimizer
) -> tuple[int, list[dict[str, Any]]]:
    """Load weights and optimiser state from ``out_dir``.

    Returns:
        (the step reached, the history so far).
    """
    load_weights(out_dir, model)
    load_optimizer_state(out_dir, optimizer)
    state = read_trainer_state(out_dir)
    step = int(state["step"])
    logger.info("resumed from %s at step %d", out_dir, step)
    return step, list(state["extra"].get("history", []))


def checkpoint_configs(
    cfg: TokenizerTrainConfig, configs: ModelConfigs, summary_cfg: SummaryConfig | None
) -> dict[str, ConfigMixin]:
    """Every config the checkpoint stores, under its manifest key."""
    out: dict[str, ConfigMixin] = {
        ManifestKey.PREPROCESS: configs.preprocess,
        ManifestKey.ENCODER: configs.encoder,
        ManifestKey.FSQ: configs.fsq,
        ManifestKey.TRAINING: cfg,
    }
    if summary_cfg is not None:
        out[ManifestKey.SUMMARY] = summary_cfg
    return out


def draw_batch(
    cfg: TokenizerTrainConfig,
    step: int,
    data: TokenizerData,
    targets: FindingTargets,
    pre_cfg: PreprocessConfig,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The training batch of ``step``, drawn from ``(seed, step)`` only, so a resumed run sees the same
    batches; also seeds torch's global rng for the step's dropout masks (summary head).

    Returns:
        (record indices (B,), signals (B, leads, samples), measurements (B, features) or None).
    """
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    batch_idx = torch.randperm(len(data.train_x), generator=gen)[: cfg.batch_size]
    # ... and the same dropout masks (summary head): the global generator is not in the checkpoint
    torch.manual_seed(cfg.seed * 1_000_003 + step)
    f = None
    train_set = data.train_set
    if cfg.augment:  # new recording conditions in mV, then the same z-score and measurements as always
        assert train_set.prepared_mv is not None
        mv = augment_mv(
            train_set.prepared_mv[batch_idx.numpy()], np.random.default_rng([cfg.seed, step]), pre_cfg.fs_hz
        )
        x = torch.from_numpy(zscore(mv, pre_cfg)).to(device)  # (B, leads, samples)
        if targets.summary is not None:
            measured = np.stack([measure_signal(m, pre_cfg.fs_hz, pre_cfg) for m in mv])  # one rate
            f = torch.from_numpy(measured).to(device)
    else:
        x = data.train_x[batch_idx.to(device)]  # (B, leads, samples)
        if targets.summary is not None:
            f = torch.from_numpy(train_set.features[batch_idx.numpy()]).to(device)
    return batch_idx, x, f


def batch_loss(
    cfg: TokenizerTrainConfig,
    model: EcgTokenizer,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    targets: FindingTargets,
    use_amp: bool,
) -> torch.Tensor:
    """Reconstruction MSE (+ ``l1_weight`` x L1) of a batch, plus ``summary_weight`` x the findings' BCE."""
    batch_idx, x, f = batch
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=use_amp):
        recon, _, _, logits = model(x, f)
    recon = recon.float()
    loss = F.mse_loss(recon, x)
    if cfg.l1_weight > 0:
        loss = loss + cfg.l1_weight * F.l1_loss(recon, x)
    train_y, train_w = targets.train_y, targets.train_w
    if logits is not None and train_y is not None and train_w is not None and cfg.summary_weight > 0:
        y, w = train_y[batch_idx].to(x.device), train_w[batch_idx].to(x.device)
        loss = loss + cfg.summary_weight * masked_bce(logits.float(), y, w)
    return loss


def log_eval(step: int, train_loss: float, last_eval: dict[str, Any]) -> None:
    """One log line per evaluation: losses, codebook usage and (with a summary head) the AUCs."""
    logger.info(
        "step %d: train loss %.4f, eval mse %.4f, codes used %d (%.1f%%), perplexity %.0f%s",
        step,
        train_loss,
        last_eval["mse"],
        last_eval["codes_used"],
        100 * last_eval["code_usage"],
        last_eval["perplexity"],
        f", summary AUC superclasses {last_eval['summary_auc_superclass']:.3f} "
        f"all {last_eval['summary_auc_macro']:.3f}"
        if "summary_auc_macro" in last_eval
        else "",
    )


def train(
    cfg: TokenizerTrainConfig,
    model: EcgTokenizer,
    optimizer: torch.optim.Optimizer,
    configs: ModelConfigs,
    data: TokenizerData,
    targets: FindingTargets,
    step: int,
    history: list[dict[str, Any]],
    device: torch.device,
) -> LoopResult:
    """Train from ``step`` to the end step, appending an evaluation to ``history`` (and checkpointing to
    ``cfg.out_dir``) every ``eval_every`` steps and at the end.

    Raises:
        DiagEcgError: the loss became NaN/inf.
    """
    out_dir, last = Path(cfg.out_dir), end_step(cfg)
    use_amp = cfg.amp and device.type == "cuda"
    stored = checkpoint_configs(cfg, configs, targets.summary)

    def evaluate_model() -> dict[str, Any]:
        return evaluate(model, data.eval_x, cfg.batch_size, device, targets.eval_f, targets.eval_y)

    start_step = step
    if step == 0:  # the untrained model's scores, as the reference point of the run
        first = evaluate_model()
        history.append({"step": 0, "train_loss": None, **{f"eval_{k}": v for k, v in first.items()}})
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="tokenizer", unit="step", disable=not cfg.progress)
    recent: list[float] = []
    train_time = 0.0
    last_eval: dict[str, Any] | None = None
    while step < last:
        t0 = time.time()
        batch = draw_batch(cfg, step, data, targets, configs.preprocess, device)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(cfg, step)
        loss = batch_loss(cfg, model, batch, targets, use_amp)
        if not torch.isfinite(loss):
            raise DiagEcgError(
                f"tokenizer training diverged: loss {loss.item()} at step {step} "
                f"(try a lower lr than {cfg.lr})"
            )
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
            bar.set_postfix(
                loss=f"{np.mean(recent[-cfg.log_every :]):.4f}", lr=f"{_lr_at(cfg, step - 1):.2e}"
            )
        if step % cfg.eval_every == 0 or step == last:
            last_eval = evaluate_model()
            history.append(
                {
                    "step": step,
                    "train_loss": float(np.mean(recent[-cfg.eval_every :])),
                    **{f"eval_{k}": v for k, v in last_eval.items()},
                }
            )
            log_eval(step, history[-1]["train_loss"], last_eval)
            save_checkpoint(
                out_dir, model, stored, step, optimizer, extra={"history": history, "seed": cfg.seed}
            )
    bar.close()
    if last_eval is None:  # resumed at or past the end: nothing trained, still report the model
        last_eval = evaluate_model()
    return LoopResult(step, start_step, train_time, recent, last_eval)


def run_summary(
    cfg: TokenizerTrainConfig,
    configs: ModelConfigs,
    data: TokenizerData,
    targets: FindingTargets,
    model: EcgTokenizer,
    run: LoopResult,
    history: list[dict[str, Any]],
    device: torch.device,
    t_start: float,
) -> dict[str, Any]:
    """The run summary: speed, data counts, sizes, the last and the initial evaluation, the history."""
    train_set, eval_set, summary_cfg = data.train_set, data.eval_set, targets.summary
    steps_run = run.step - run.start_step
    train_ids = data.train_ids
    return {
        "stage": "tokenizer",
        "preset": cfg.preset,
        "out_dir": str(Path(cfg.out_dir)),
        "device": str(device),
        "step": run.step,
        "steps_this_run": steps_run,
        "resumed_from_step": run.start_step if configs.resuming else None,
        "steps_per_s": steps_run / run.train_time if run.train_time > 0 else None,
        "wall_s": time.time() - t_start,
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_train_records": len(train_ids) - len(train_set.skipped) if data.finished else len(data.train_x),
        "n_train_statements_labelled": len(
            data.ptbxl.statements_labelled_ids(train_ids if data.finished else train_set.ids)
        ),
        "n_eval_records": len(data.eval_x),
        "n_skipped_records": len(train_set.skipped) + len(eval_set.skipped),
        "n_frames": configs.encoder.n_frames,
        "codebook_size": configs.fsq.codebook_size,
        "n_summary_tokens": model.n_summary,
        "summary_findings": list(summary_cfg.findings) if summary_cfg is not None else [],
        "train_loss_first": run.recent[0] if run.recent else None,
        "train_loss_last": float(np.mean(run.recent[-cfg.log_every :])) if run.recent else None,
        "eval": run.last_eval,
        "eval_zero_mse": float(data.eval_x.pow(2).mean()),  # MSE of predicting all zeros, for scale
        "eval_initial_mse": history[0]["eval_mse"] if history else None,  # untrained model
        "best_eval_mse": min((h["eval_mse"] for h in history if h["step"] > 0), default=run.last_eval["mse"]),
        "history": history,
    }


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
    device = start_device(cfg)
    configs = resolve_configs(cfg, out_dir)
    data = load_data(cfg, configs, out_dir, device)
    targets = finding_targets(cfg, configs, data, out_dir)
    model, optimizer = build_model(cfg, configs, targets.summary, data, device)
    step, history = resume_state(out_dir, model, optimizer) if configs.resuming else (0, [])
    run = train(cfg, model, optimizer, configs, data, targets, step, history, device)
    summary = run_summary(cfg, configs, data, targets, model, run, history, device, t_start)
    write_summary(out_dir, summary)
    return summary

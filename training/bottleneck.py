"""Where is the ECG's diagnostic information lost? Superclass AUC at each step of the pipeline.

On the test fold (never trained on), the macro AUC over the PTB-XL diagnostic superclasses of:

(a) ``cnn``: a supervised 1-D CNN on the preprocessed signal (the tokenizer's own encoder
    architecture, fresh weights, mean+max pooled, linear head; trained on the train folds): what the
    signals here allow without the tokenizer;
(b) ``encoder_probe``: a linear probe on the tokenizer's continuous encoder features (the fused
    per-frame features, mean+max pooled), frozen;
(c) ``codes_probe``: a linear probe on the frame FSQ codes (code histogram + pooled code values):
    what survives quantisation into the LLM's frame tokens;
(e) ``measurements_probe``: a linear probe on the numpy measurements (``diagecg.features``);
(f) ``summary_tokens``: the tokenizer's summary head as quantised into its tokens (when it has one);
(d) ``llm``: the LLM's p(present) for the verify question of each superclass (from ``diagecg eval``'s
    results; and its ECG ablation beside it).

Probes are L2-regularised logistic regressions on standardised inputs (full batch, Adam), trained on
the train folds, reported on the validation and the test folds, each macro AUC with its 95% bootstrap
interval (``macro_ci95``, records resampled). With ``ptbxl_full`` (the default, where the data root has
it) every split holds ptbxl_full's records too: superclass labels are known for all of them.

    diagecg probe --tokenizer runs/tokenizer --data shared/data --eval-results runs/instruct/eval_results.json
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from diagecg.config import ConfigMixin, check_field
from diagecg.datasets.ptbxl import (
    SUPERCLASSES,
    TEST_FOLDS,
    TRAIN_FOLDS,
    VALID_FOLDS,
    PtbxlDataset,
    finding_labels,
)
from diagecg.nn.checkpoint import load_tokenizer
from diagecg.nn.ecg_tokenizer import EcgTokenizer
from diagecg.nn.encoder import LeadwiseEncoder
from diagecg.scoring import bootstrap_auc_intervals, roc_auc
from diagecg.training.ecg_data import LoadedRecords, load_signals, source_fs_hz

logger = logging.getLogger(__name__)

LABELS: tuple[str, ...] = SUPERCLASSES  # what every row is scored on
ROWS: tuple[str, ...] = ("cnn", "encoder_probe", "codes_probe", "measurements_probe", "summary_tokens", "llm")


@dataclasses.dataclass(frozen=True)
class BottleneckConfig(ConfigMixin):
    """What ``diagecg probe`` measures."""

    tokenizer_dir: str = "runs/tokenizer"  # stage-1 checkpoint (or an LLM checkpoint's ecg_tokenizer folder)
    data_dir: str = "data"
    # also the records of ptbxl_full/ beside ptbxl/ when the data root has it (diagecg.datasets.ptbxl)
    ptbxl_full: bool = True
    eval_results: str | None = None  # results JSON of `diagecg eval` for row (d); None = no LLM row
    out_file: str | None = None
    train_folds: tuple[int, ...] = TRAIN_FOLDS
    valid_folds: tuple[int, ...] = VALID_FOLDS
    test_folds: tuple[int, ...] = TEST_FOLDS
    cnn_steps: int = 700  # 0 = skip row (a)
    cnn_batch_size: int = 32
    cnn_lr: float = 2e-3
    probe_steps: int = 400
    probe_weight_decay: float = 1e-2
    seed: int = 0
    num_threads: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        n = "BottleneckConfig"
        for name in ("train_folds", "valid_folds", "test_folds"):
            folds = getattr(self, name)
            check_field(
                len(folds) > 0 and all(1 <= f <= 10 for f in folds), n, name, folds, "PTB-XL folds 1-10"
            )
        check_field(
            not (set(self.train_folds) & (set(self.valid_folds) | set(self.test_folds))),
            n,
            "train_folds",
            self.train_folds,
            "must be disjoint from the valid and test folds",
        )
        check_field(self.cnn_steps >= 0, n, "cnn_steps", self.cnn_steps, "must be >= 0")
        check_field(self.probe_steps >= 1, n, "probe_steps", self.probe_steps, "must be >= 1")


def _aucs(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Each superclass's AUC over (N, 5) labels and scores, their macro mean and its 95% bootstrap
    interval (``macro_ci95``: the N records resampled)."""
    per = {c: roc_auc(labels[:, k], scores[:, k]) for k, c in enumerate(LABELS)}
    vals = [v for v in per.values() if not math.isnan(v)]
    records = np.arange(len(labels))
    ci = bootstrap_auc_intervals(
        {c: (labels[:, k], scores[:, k], records) for k, c in enumerate(LABELS)}, groups={"macro": LABELS}
    )["macro"]
    return {"macro": float(np.mean(vals)) if vals else math.nan, "macro_ci95": list(ci), **per}


def fit_probe(
    x: dict[str, np.ndarray], y: dict[str, np.ndarray], steps: int, weight_decay: float, seed: int
) -> dict[str, dict[str, float]]:
    """Logistic regression on standardised ``x["train"]``; superclass AUCs on every other split."""
    mu, sd = x["train"].mean(0), x["train"].std(0) + 1e-6
    xs = {k: torch.from_numpy(((v - mu) / sd).astype(np.float32)) for k, v in x.items()}
    torch.manual_seed(seed)
    lin = nn.Linear(xs["train"].shape[1], len(LABELS))
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=weight_decay)
    yt = torch.from_numpy(y["train"])
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(lin(xs["train"]), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return {k: _aucs(y[k], lin(v).numpy()) for k, v in xs.items() if k != "train"}


class _SupervisedCnn(nn.Module):
    """The tokenizer's encoder architecture with a pooled linear head (row (a))."""

    def __init__(self, tokenizer: EcgTokenizer) -> None:
        super().__init__()
        self.encoder = LeadwiseEncoder(tokenizer.encoder_cfg, latent_dim=tokenizer.fsq_cfg.dim)
        self.head = nn.Linear(2 * tokenizer.encoder_cfg.fused_channels, len(LABELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder.fused(x)  # (B, C, T)
        return self.head(torch.cat([h.mean(-1), h.amax(-1)], dim=-1))


def fit_cnn(
    cfg: BottleneckConfig, tokenizer: EcgTokenizer, data: dict[str, LoadedRecords], y: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Row (a): train the CNN on the train folds (cosine lr, light noise/gain augmentation)."""
    torch.manual_seed(cfg.seed)
    net = _SupervisedCnn(tokenizer)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.cnn_lr, weight_decay=1e-2)
    x_train, y_train = torch.from_numpy(data["train"].signals), torch.from_numpy(y["train"])
    gen = torch.Generator().manual_seed(cfg.seed)
    for step in tqdm(range(cfg.cnn_steps), desc="supervised CNN", disable=not cfg.progress):
        for group in opt.param_groups:
            group["lr"] = cfg.cnn_lr * 0.5 * (1 + math.cos(math.pi * step / cfg.cnn_steps))
        idx = torch.randint(len(x_train), (cfg.cnn_batch_size,), generator=gen)
        x = x_train[idx]
        x = x * (1 + 0.1 * torch.randn(len(idx), x.shape[1], 1, generator=gen)) + 0.05 * torch.randn(
            x.shape, generator=gen
        )
        loss = F.binary_cross_entropy_with_logits(net(x), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    out = {}
    with torch.no_grad():
        for split in ("valid", "test"):
            x = torch.from_numpy(data[split].signals)
            scores = torch.cat([net(x[i : i + 64]) for i in range(0, len(x), 64)]).numpy()
            out[split] = _aucs(y[split], scores)
    return out


@torch.no_grad()
def tokenizer_features(tokenizer: EcgTokenizer, loaded: LoadedRecords) -> dict[str, np.ndarray]:
    """Pooled encoder features, frame-code features and summary logits of the frozen tokenizer."""
    enc, codes, summary = [], [], []
    for i in range(0, len(loaded.ids), 64):
        x = torch.from_numpy(loaded.signals[i : i + 64])
        h = tokenizer.encoder.fused(x)  # (B, C, T)
        enc.append(torch.cat([h.mean(-1), h.amax(-1)], dim=-1))
        q, idx = tokenizer.fsq(tokenizer.encoder.project(h))  # (B, T, d), (B, T)
        hist = torch.stack([torch.bincount(r, minlength=tokenizer.codebook_size) for r in idx]).float()
        codes.append(torch.cat([hist / idx.shape[1], q.mean(1), q.amax(1), q.amin(1)], dim=-1))
        if tokenizer.summary is not None:
            f = torch.from_numpy(loaded.features[i : i + 64])
            summary.append(tokenizer.summary(h, f)[0])
    out = {"encoder": torch.cat(enc).numpy(), "codes": torch.cat(codes).numpy()}
    if summary:
        out["summary"] = torch.cat(summary).numpy()
    return out


def llm_row(path: str | Path) -> dict[str, Any]:
    """Row (d) from a ``diagecg eval`` results JSON: the template wording's superclass AUCs."""
    results = json.loads(Path(path).read_text())
    block = (results.get("findings") or {}).get("template") or {}
    out: dict[str, Any] = {}
    for label in ("model", "ablated"):
        scored = block.get(label)
        if not scored:
            continue
        per = {c: scored["per_finding"][c]["auc"] for c in LABELS if c in scored["per_finding"]}
        vals = [v for v in per.values() if v is not None and not math.isnan(v)]
        out[label] = {"macro": float(np.mean(vals)) if vals else math.nan, **per}
    if not out:
        raise ValueError(f"{path} has no per-finding results (run `diagecg eval` of this version)")
    return {"test": out["model"], **({"test_ablated": out["ablated"]} if "ablated" in out else {})}


def main(cfg: BottleneckConfig) -> dict[str, Any]:
    """Measure every row; write ``cfg.out_file`` (JSON) when set.

    Returns:
        ``{"rows": {row: {split: {"macro", <superclass>: auc}}}, "n_records": {split: n}, ...}``.
    """
    t0 = time.time()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    tokenizer, pre_cfg, _, _ = load_tokenizer(cfg.tokenizer_dir)
    ptbxl = PtbxlDataset.from_data_dir(cfg.data_dir, full=cfg.ptbxl_full)
    fs = source_fs_hz(pre_cfg.fs_hz)
    splits = {"train": cfg.train_folds, "valid": cfg.valid_folds, "test": cfg.test_folds}
    data = {
        k: load_signals(ptbxl, ptbxl.ids(f, fs_hz=fs), pre_cfg, progress=cfg.progress)
        for k, f in splits.items()
    }
    y = {k: np.array(finding_labels(ptbxl, d.ids, LABELS), dtype=np.float32) for k, d in data.items()}
    feats = {k: tokenizer_features(tokenizer, d) for k, d in data.items()}

    rows: dict[str, Any] = {}
    if cfg.cnn_steps:
        rows["cnn"] = fit_cnn(cfg, tokenizer, data, y)
    for row, key in (("encoder_probe", "encoder"), ("codes_probe", "codes")):
        rows[row] = fit_probe(
            {k: f[key] for k, f in feats.items()}, y, cfg.probe_steps, cfg.probe_weight_decay, cfg.seed
        )
    rows["measurements_probe"] = fit_probe(
        {k: d.features for k, d in data.items()}, y, cfg.probe_steps, cfg.probe_weight_decay, cfg.seed
    )
    if tokenizer.summary_cfg is not None:
        cols = [tokenizer.summary_cfg.findings.index(c) for c in LABELS]
        rows["summary_tokens"] = {k: _aucs(y[k], feats[k]["summary"][:, cols]) for k in ("valid", "test")}
    if cfg.eval_results:
        rows["llm"] = llm_row(cfg.eval_results)
    results = {
        "tokenizer_dir": str(cfg.tokenizer_dir),
        "config": cfg.to_dict(),
        "n_records": {k: len(d.ids) for k, d in data.items()},
        "labels": list(LABELS),
        "rows": rows,
        "wall_s": round(time.time() - t0, 1),
    }
    if cfg.out_file:
        Path(cfg.out_file).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out_file).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return results


def format_results(results: dict[str, Any]) -> str:
    """One line per row: macro superclass AUC on the validation and test folds, then each superclass
    (test)."""
    head = f"{'row':<20} {'valid':>6} {'test':>6}  " + " ".join(f"{c:>5}" for c in LABELS)
    lines = [f"superclass AUC, records {results['n_records']}", head, "-" * len(head)]

    def f3(v: Any) -> str:
        return "  -  " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    for row in ROWS:
        r = results["rows"].get(row)
        if r is None:
            continue
        test = r.get("test", {})
        lines.append(
            f"{row:<20} {f3(r.get('valid', {}).get('macro')):>6} {f3(test.get('macro')):>6}  "
            + " ".join(f"{f3(test.get(c)):>5}" for c in LABELS)
        )
        if "test_ablated" in r:
            t = r["test_ablated"]
            lines.append(
                f"{row + ' (ECG ablated)':<20} {'-':>6} {f3(t.get('macro')):>6}  "
                + " ".join(f"{f3(t.get(c)):>5}" for c in LABELS)
            )
    return "\n".join(lines)

"""Diagnostic summary head: pooled encoder features + signal measurements -> one FSQ token per finding.

The frame tokens of the ECG tokenizer are trained on reconstruction alone, so they need not carry
what a diagnosis needs, and a small LLM has to pool 63-313 of them to answer one question. The
summary head is the supervised shortcut (issue: answers that depend on the ECG): the fused
per-frame features of the shared encoder are pooled over time (mean and max), concatenated with
the standardised measurements of ``diagecg.features`` (rate, rhythm, intervals and amplitudes in mV,
which the per-lead z-score removes), and an MLP predicts one logit per finding. Each logit is then
quantised on its own by FSQ (arXiv 2309.15505) with ``SummaryConfig.levels`` levels, and the loss
is binary cross-entropy on an affine map of the *quantised* value, so the token the LLM reads is
itself the trained predictor: level ``l`` of finding ``f`` means "as likely as level ``l`` says".

Einstein axes: B batch, C fused channels, T frames, M measurements, F findings.
"""

from __future__ import annotations

import torch
from torch import nn

from diagecg.config import SummaryConfig
from diagecg.nn.fsq import FSQ

FEATURE_CLIP = 6.0  # standardised measurements are clipped to +-this many standard deviations


class SummaryHead(nn.Module):
    """(B, C, T) fused features + (B, M) measurements -> (B, F) logits and levels.

    Args:
        cfg: findings, levels, measurement names, hidden width.
        in_channels: C, the encoder's fused channels.

    Buffers ``feature_mean``/``feature_std`` (persistent: they are learnt from the training data,
    see :meth:`set_feature_stats`) standardise the measurements.
    """

    feature_mean: torch.Tensor
    feature_std: torch.Tensor

    def __init__(self, cfg: SummaryConfig, in_channels: int) -> None:
        super().__init__()
        assert cfg.enabled, "SummaryHead needs at least one finding"
        self.cfg = cfg
        n_feat, n_find = len(cfg.features), len(cfg.findings)
        self.register_buffer("feature_mean", torch.zeros(n_feat))
        self.register_buffer("feature_std", torch.ones(n_feat))
        self.mlp = nn.Sequential(
            nn.Linear(2 * in_channels + n_feat, cfg.hidden),
            nn.GELU(),
            nn.Dropout(0.2),
            nn.Linear(cfg.hidden, n_find),
        )
        self.fsq = FSQ((cfg.levels,) * n_find)
        # logit of finding f = scale_f * code_f + bias_f: the BCE is taken on the quantised code
        self.scale = nn.Parameter(torch.full((n_find,), 4.0))
        self.bias = nn.Parameter(torch.zeros(n_find))

    @torch.no_grad()
    def set_feature_stats(self, features: torch.Tensor) -> None:
        """Standardisation of the measurements from the training records (N, M)."""
        self.feature_mean.copy_(features.mean(dim=0))
        self.feature_std.copy_(features.std(dim=0).clamp_min(1e-3))

    def forward(self, fused: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (logits float32 (B, F) from the quantised codes, levels int64 (B, F) in [0, levels))."""
        T = fused.shape[-1]
        h = fused.reshape(fused.shape[0], fused.shape[1], T)  # (B, C, *unit, T) -> (B, C, T)
        pooled = torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=-1)  # (B, 2C)
        f = ((features.float() - self.feature_mean) / self.feature_std).clamp(-FEATURE_CLIP, FEATURE_CLIP)
        z = self.mlp(torch.cat([pooled.float(), f], dim=-1))  # (B, F)
        codes, levels = self.fsq.quantize_levels(z)  # (B, F) each
        return codes * self.scale + self.bias, levels


class MeasureBins(nn.Module):
    """(B, M) raw measurements -> int64 (B, K) ECG codes of the measurement tokens.

    Measurement ``k`` (``cfg.measure_tokens[k]``) falls in bin ``sum(value > edge)`` of its edges
    (``diagecg.features.measure_bins`` is the same rule in numpy); its code is ``offset_k + bin``,
    the offsets counting from ``code_base`` (after the frame and finding codes). Comparisons and a
    sum only, so the ONNX graph computes the tokens and the runtime needs nothing beside it.
    """

    edges: torch.Tensor
    offsets: torch.Tensor
    columns: torch.Tensor

    def __init__(self, cfg: SummaryConfig, code_base: int) -> None:
        super().__init__()
        width = max(len(e) for e in cfg.measure_edges)
        # edges padded with +inf (never exceeded) to one (K, width) table
        table = torch.full((len(cfg.measure_edges), width), float("inf"))
        for k, e in enumerate(cfg.measure_edges):
            table[k, : len(e)] = torch.tensor(e)
        sizes = [len(e) + 1 for e in cfg.measure_edges]
        offsets = [code_base + sum(sizes[:k]) for k in range(len(sizes))]
        self.register_buffer("edges", table, persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.int64), persistent=False)
        self.register_buffer(
            "columns",
            torch.tensor([cfg.features.index(n) for n in cfg.measure_tokens], dtype=torch.int64),
            persistent=False,
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        values = features.float().index_select(1, self.columns)  # (B, K)
        bins = (values.unsqueeze(-1) > self.edges).to(torch.int64).sum(dim=-1)  # (B, K)
        return self.offsets + bins

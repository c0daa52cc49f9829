"""Lead-wise 1-D convolutional encoder and its mirror decoder (DiagECG, arXiv 2508.15338, Sec. 3.1).

Every lead goes through the same small Inception-style conv net (shared
weights), which halves the time axis once per stage (``2**len(stage_channels)``
in all: 5000 -> 313, 1000 -> 63 frames); the per-lead features of a frame are
then fused into one latent vector of the FSQ dimension. The decoder mirrors
this to rebuild the 12 leads, and exists only for the reconstruction loss.

Input signals are preprocessed float32 ``(B, leads, samples)``, z-scored per
lead (diagecg.preprocess). Composites take ``EncoderConfig``; leaf layers take
plain kwargs, so each can be built and tested alone.
"""

from __future__ import annotations

import torch
from torch import nn

from diagecg.config import EncoderConfig


class InceptionBlock(nn.Module):
    """Parallel convs (k = 3, 5, 7) + a max-pool branch, concatenated, projected, normed, residual.

    Args:
        in_channels: input channels.
        out_channels: output channels; each of the four branches has ``out_channels // 4``.
        groups: GroupNorm groups (must divide ``out_channels``).
        negative_slope: LeakyReLU slope.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int, negative_slope: float) -> None:
        super().__init__()
        branch = max(out_channels // 4, 1)  # the concatenation is about out_channels wide
        self.convs = nn.ModuleList(
            nn.Conv1d(in_channels, branch, kernel_size=k, padding=k // 2) for k in (3, 5, 7)
        )
        self.pool = nn.Sequential(
            nn.MaxPool1d(kernel_size=3, stride=1, padding=1),
            nn.Conv1d(in_channels, branch, kernel_size=1),
        )
        self.proj = nn.Conv1d(4 * branch, out_channels, kernel_size=1)
        self.norm = nn.GroupNorm(groups, out_channels)
        self.act = nn.LeakyReLU(negative_slope)
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv1d(in_channels, out_channels, kernel_size=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, C_in, L) -> (N, C_out, L)
        h = torch.cat([conv(x) for conv in self.convs] + [self.pool(x)], dim=1)  # (N, 4*branch, L)
        h = self.act(self.norm(self.proj(h)))
        return h + self.skip(x)


class ConvNormAct(nn.Sequential):
    """Conv1d -> GroupNorm -> LeakyReLU; ``stride=2, kernel_size=3, padding=1`` halves L (rounding up)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        padding: int,
        groups: int,
        negative_slope: float,
    ) -> None:
        super().__init__(
            nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=padding),
            nn.GroupNorm(groups, out_channels),
            nn.LeakyReLU(negative_slope),
        )


class UpNormAct(nn.Sequential):
    """ConvTranspose1d (k=4, stride 2) -> GroupNorm -> LeakyReLU: doubles L exactly."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, negative_slope: float) -> None:
        super().__init__(
            nn.ConvTranspose1d(in_channels, out_channels, kernel_size=4, stride=2, padding=1),
            nn.GroupNorm(groups, out_channels),
            nn.LeakyReLU(negative_slope),
        )


class LeadwiseEncoder(nn.Module):
    """(B, leads, samples) z-scored signal -> (B, frames, latent_dim) pre-quantisation latents.

    Args:
        cfg: architecture; ``cfg.n_frames`` frames come out of ``cfg.n_samples`` samples.
        latent_dim: output channels per frame (the FSQ dimension, ``len(levels)``).

    Attributes:
        unit_dims: size-1 axes inserted between channels and time; ``()`` for the Conv1d layers
            built here, ``(1,)`` once ``export.onnx_tokenizer.conv1d_as_conv2d`` has turned them
            into Conv2d layers over (1, L) images.
    """

    unit_dims: tuple[int, ...] = ()

    def __init__(self, cfg: EncoderConfig, latent_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        g, slope = cfg.groups, cfg.negative_slope
        self.stem = ConvNormAct(1, cfg.stem_channels, 7, 1, 3, g, slope)
        stages: list[nn.Module] = []
        c_in = cfg.stem_channels
        for c in cfg.stage_channels:
            stages.append(
                nn.Sequential(
                    InceptionBlock(c_in, c, g, slope),
                    ConvNormAct(c, c, 3, 2, 1, g, slope),  # L -> ceil(L / 2)
                )
            )
            c_in = c
        self.stages = nn.Sequential(*stages)
        lead_features = cfg.n_leads * cfg.stage_channels[-1]
        self.fuse = nn.Sequential(
            nn.Conv1d(lead_features, cfg.fused_channels, kernel_size=1),
            nn.GroupNorm(g, cfg.fused_channels),
            nn.LeakyReLU(slope),
            nn.Conv1d(cfg.fused_channels, latent_dim, kernel_size=1),
        )

    def fused(self, x: torch.Tensor) -> torch.Tensor:
        """(B, leads, samples) -> (B, fused_channels, *unit_dims, T): the fused features before the
        projection to the FSQ dimension (what the summary head pools)."""
        B, n_leads, n_samples = x.shape
        u = self.unit_dims
        h = x.reshape(B * n_leads, 1, *u, n_samples)  # (B, leads, N) -> (B*leads, 1, N): leads share weights
        h = self.stages(self.stem(h))  # (B*leads, C, T), T = ceil(N / 2**stages)
        T = h.shape[-1]
        h = h.reshape(B, -1, *u, T)  # (B*leads, C, T) -> (B, leads*C, T), lead-major channels
        return self.fuse[:-1](h)  # (B, fused, T)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """Fused features (B, fused, *unit_dims, T) -> (B, T, latent_dim) pre-quantisation latents."""
        B, T = h.shape[0], h.shape[-1]
        z = self.fuse[-1](h).reshape(B, -1, T)  # (B, latent_dim, T)
        return z.transpose(1, 2)  # (B, T, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.fused(x))  # (B, leads, N) -> (B, T, latent_dim)


class LeadwiseDecoder(nn.Module):
    """(B, frames, latent_dim) codes -> (B, leads, samples) reconstruction; mirror of LeadwiseEncoder.

    Args:
        cfg: the encoder's architecture; the output is cropped to ``cfg.n_samples``.
        latent_dim: input channels per frame (the FSQ dimension).
    """

    def __init__(self, cfg: EncoderConfig, latent_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        g, slope = cfg.groups, cfg.negative_slope
        c_last = cfg.stage_channels[-1]
        self.unfuse = nn.Sequential(
            nn.Conv1d(latent_dim, cfg.fused_channels, kernel_size=1),
            nn.GroupNorm(g, cfg.fused_channels),
            nn.LeakyReLU(slope),
            nn.Conv1d(cfg.fused_channels, cfg.n_leads * c_last, kernel_size=1),
        )
        widths = [*reversed(cfg.stage_channels), cfg.stem_channels]  # e.g. 128, 64, 64, 32, 32
        self.stages = nn.Sequential(
            *(
                nn.Sequential(UpNormAct(c, c, g, slope), InceptionBlock(c, c_next, g, slope))  # L -> 2L
                for c, c_next in zip(widths[:-1], widths[1:], strict=True)
            )
        )
        self.head = nn.Conv1d(cfg.stem_channels, 1, kernel_size=7, padding=3)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        B, T, _ = codes.shape
        h = self.unfuse(codes.transpose(1, 2))  # (B, T, d) -> (B, d, T) -> (B, leads*C, T)
        h = h.reshape(B * self.cfg.n_leads, -1, T)  # (B*leads, C, T)
        h = self.head(self.stages(h))  # (B*leads, 1, T * 2**stages)
        h = h[..., : self.cfg.n_samples]  # crop the padding frames' tail: 1008 -> 1000
        return h.reshape(B, self.cfg.n_leads, -1)  # (B, leads, N)

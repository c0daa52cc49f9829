"""EcgTokenizer: lead-wise encoder + FSQ (+ decoder for training) (DiagECG, arXiv 2508.15338),
with an optional diagnostic summary head (``diagecg.nn.summary``).

``encode`` turns a preprocessed 12-lead signal (and its measurements, when the tokenizer has a
summary) into the ECG's token indices: the summary tokens first (one per finding, codes
``[frame_codes, frame_codes + F * levels)``), then one FSQ index per frame (codes
``[0, frame_codes)``). Those indices become the LLM tokens ``<ecg_k>``. ``index_module()`` is the
part that ONNX export needs: signal (and measurements) in, int64 indices out, nothing else.
"""

from __future__ import annotations

import torch
from torch import nn

from diagecg.config import EncoderConfig, FSQConfig, SummaryConfig
from diagecg.nn.encoder import LeadwiseDecoder, LeadwiseEncoder
from diagecg.nn.fsq import FSQ
from diagecg.nn.summary import MeasureBins, SummaryHead


class EcgIndexModule(nn.Module):
    """Signal (+ measurements) -> token indices only; shares its weights with its tokenizer (for ONNX)."""

    def __init__(self, tokenizer: EcgTokenizer) -> None:
        super().__init__()
        self.tokenizer = tokenizer

    def forward(self, signal: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        # signal: float32 (B, leads, samples), features: float32 (B, M) -> indices: int64 (B, tokens)
        return self.tokenizer.token_indices(signal, features)


class EcgTokenizer(nn.Module):
    """Encoder + finite scalar quantiser + decoder (+ summary head).

    Args:
        encoder_cfg: architecture and input length (``n_samples``) of the encoder/decoder.
        fsq_cfg: FSQ levels; the frame codebook has ``fsq_cfg.codebook_size`` codes.
        summary_cfg: diagnostic summary tokens; None or no findings = frame tokens only (the paper's).
    """

    def __init__(
        self, encoder_cfg: EncoderConfig, fsq_cfg: FSQConfig, summary_cfg: SummaryConfig | None = None
    ) -> None:
        super().__init__()
        self.encoder_cfg = encoder_cfg
        self.fsq_cfg = fsq_cfg
        self.summary_cfg = summary_cfg if summary_cfg is not None and summary_cfg.enabled else None
        self.encoder = LeadwiseEncoder(encoder_cfg, latent_dim=fsq_cfg.dim)
        self.fsq = FSQ(fsq_cfg.levels)
        self.decoder = LeadwiseDecoder(encoder_cfg, latent_dim=fsq_cfg.dim)
        self.summary = (
            SummaryHead(self.summary_cfg, encoder_cfg.fused_channels)
            if self.summary_cfg is not None
            else None
        )
        self.measure_bins = None
        if self.summary_cfg is not None and self.summary_cfg.measure_tokens:
            base = fsq_cfg.codebook_size + self.summary_cfg.n_finding_codes
            self.measure_bins = MeasureBins(self.summary_cfg, base)

    @property
    def n_frames(self) -> int:
        return self.encoder_cfg.n_frames

    @property
    def n_summary(self) -> int:
        """Summary tokens per ECG (0 without a summary head)."""
        return self.summary_cfg.n_tokens if self.summary_cfg is not None else 0

    @property
    def n_tokens(self) -> int:
        """ECG tokens per record: summary tokens + frames."""
        return self.n_summary + self.n_frames

    @property
    def codebook_size(self) -> int:
        """Frame codes (the FSQ codebook)."""
        return self.fsq_cfg.codebook_size

    @property
    def n_codes(self) -> int:
        """All ECG codes: frame codes, then the summary's ``findings * levels`` codes."""
        return self.codebook_size + (self.summary_cfg.n_codes if self.summary_cfg is not None else 0)

    def check_signal(self, signal: torch.Tensor) -> None:
        """Raise ValueError unless ``signal`` is floating (B, n_leads, n_samples)."""
        want = (self.encoder_cfg.n_leads, self.encoder_cfg.n_samples)
        if signal.dim() != 3 or tuple(signal.shape[1:]) != want:
            raise ValueError(
                f"EcgTokenizer expects a signal of shape (batch, {want[0]}, {want[1]}), "
                f"got {tuple(signal.shape)}"
            )
        if not signal.is_floating_point():
            raise TypeError(f"EcgTokenizer expects a float signal, got {signal.dtype}")

    def check_features(self, signal: torch.Tensor, features: torch.Tensor | None) -> None:
        """Raise ValueError unless ``features`` fits the summary head (None when there is none)."""
        if self.summary_cfg is None:
            if features is not None:
                raise ValueError("this tokenizer has no summary head: it takes no measurements")
            return
        n = len(self.summary_cfg.features)
        if features is None or features.dim() != 2 or tuple(features.shape) != (signal.shape[0], n):
            got = None if features is None else tuple(features.shape)
            raise ValueError(
                f"EcgTokenizer expects measurements of shape ({signal.shape[0]}, {n}), got {got}"
            )

    def check_indices(self, indices: torch.Tensor) -> None:
        """Raise ValueError unless ``indices`` is integer (B, n_frames) frame codes in [0, codebook_size)."""
        if indices.dim() != 2 or indices.shape[1] != self.n_frames:
            raise ValueError(
                f"expected indices of shape (batch, {self.n_frames}), got {tuple(indices.shape)}"
            )
        if indices.is_floating_point():
            raise TypeError(f"expected integer indices, got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"indices must lie in [0, {self.codebook_size}), got "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )

    def summary_codes(self, levels: torch.Tensor) -> torch.Tensor:
        """Summary levels int64 (B, F) -> ECG codes ``codebook_size + f * levels + level`` (B, F)."""
        assert self.summary_cfg is not None
        L = self.summary_cfg.levels
        finding = torch.arange(levels.shape[-1], device=levels.device, dtype=torch.int64)
        return self.codebook_size + finding * L + levels

    def forward(
        self, signal: torch.Tensor, features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Encode, quantise, decode (and summarise).

        Args:
            signal: float32 (B, leads, samples), preprocessed (z-scored per lead).
            features: float32 (B, M) measurements (``diagecg.features``); required with a summary head.

        Returns:
            recon: float32 (B, leads, samples) reconstruction in the same (z-scored) units.
            indices: int64 (B, frames) frame FSQ indices.
            codes: float32 (B, frames, d) quantised codes in [-1, 1].
            logits: float32 (B, F) finding logits from the quantised summary, or None.
        """
        self.check_signal(signal)
        self.check_features(signal, features)
        h = self.encoder.fused(signal)
        codes, indices = self.fsq(self.encoder.project(h))
        logits = None
        if self.summary is not None:
            assert features is not None
            logits, _ = self.summary(h, features)
        return self.decoder(codes), indices, codes, logits

    def token_indices(self, signal: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """(B, leads, samples) [+ (B, M)] -> int64 (B, n_tokens): summary codes, then frame codes."""
        h = self.encoder.fused(signal)
        _, indices = self.fsq(self.encoder.project(h))
        if self.summary is None:
            return indices
        assert features is not None
        _, levels = self.summary(h, features)
        parts = [self.summary_codes(levels)]
        if self.measure_bins is not None:
            parts.append(self.measure_bins(features))
        return torch.cat([*parts, indices], dim=1)

    @torch.no_grad()
    def encode(self, signal: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Preprocessed signal float32 (B, leads, samples) [+ measurements (B, M)] -> int64
        (B, n_tokens) token indices (summary first, then frames)."""
        self.check_signal(signal)
        self.check_features(signal, features)
        return self.token_indices(signal, features)

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """int64 (B, frames) frame indices -> float32 (B, leads, samples) reconstruction (z-scored units)."""
        self.check_indices(indices)
        return self.decoder(self.fsq.indices_to_codes(indices))

    def index_module(self) -> nn.Module:
        """The encoder + FSQ (+ summary head) as one module whose forward(signal (B, leads, samples)
        float32[, features (B, M) float32]) returns int64 token indices (B, n_tokens); shares weights
        with this tokenizer (used for ONNX export)."""
        return EcgIndexModule(self)

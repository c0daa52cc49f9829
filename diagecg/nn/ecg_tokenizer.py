"""EcgTokenizer: lead-wise encoder + FSQ (+ decoder for training) (DiagECG, arXiv 2508.15338).

``encode`` turns a preprocessed 12-lead signal into one FSQ index per frame;
those indices become the LLM tokens ``<ecg_k>``. ``index_module()`` is the
part that ONNX export needs: signal in, int64 indices out, nothing else.
"""

from __future__ import annotations

import torch
from torch import nn

from diagecg.config import EncoderConfig, FSQConfig
from diagecg.nn.encoder import LeadwiseDecoder, LeadwiseEncoder
from diagecg.nn.fsq import FSQ


class EcgIndexModule(nn.Module):
    """Signal -> FSQ indices only; shares its weights with the tokenizer it came from (for ONNX export)."""

    def __init__(self, encoder: LeadwiseEncoder, fsq: FSQ) -> None:
        super().__init__()
        self.encoder = encoder
        self.fsq = fsq

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        # signal: float32 (B, leads, samples) -> indices: int64 (B, frames)
        _, indices = self.fsq(self.encoder(signal))
        return indices


class EcgTokenizer(nn.Module):
    """Encoder + finite scalar quantiser + decoder.

    Args:
        encoder_cfg: architecture and input length (``n_samples``) of the encoder/decoder.
        fsq_cfg: FSQ levels; the codebook has ``fsq_cfg.codebook_size`` codes.
    """

    def __init__(self, encoder_cfg: EncoderConfig, fsq_cfg: FSQConfig) -> None:
        super().__init__()
        self.encoder_cfg = encoder_cfg
        self.fsq_cfg = fsq_cfg
        self.encoder = LeadwiseEncoder(encoder_cfg, latent_dim=fsq_cfg.dim)
        self.fsq = FSQ(fsq_cfg.levels)
        self.decoder = LeadwiseDecoder(encoder_cfg, latent_dim=fsq_cfg.dim)

    @property
    def n_frames(self) -> int:
        return self.encoder_cfg.n_frames

    @property
    def codebook_size(self) -> int:
        return self.fsq_cfg.codebook_size

    def check_signal(self, signal: torch.Tensor) -> None:
        """Raise ValueError unless ``signal`` is floating (B, n_leads, n_samples)."""
        want = (self.encoder_cfg.n_leads, self.encoder_cfg.n_samples)
        if signal.dim() != 3 or tuple(signal.shape[1:]) != want:
            raise ValueError(f"EcgTokenizer expects a signal of shape (batch, {want[0]}, {want[1]}), "
                             f"got {tuple(signal.shape)}")
        if not signal.is_floating_point():
            raise TypeError(f"EcgTokenizer expects a float signal, got {signal.dtype}")

    def check_indices(self, indices: torch.Tensor) -> None:
        """Raise ValueError unless ``indices`` is integer (B, n_frames) in [0, codebook_size)."""
        if indices.dim() != 2 or indices.shape[1] != self.n_frames:
            raise ValueError(f"expected indices of shape (batch, {self.n_frames}), "
                             f"got {tuple(indices.shape)}")
        if indices.is_floating_point():
            raise TypeError(f"expected integer indices, got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(f"indices must lie in [0, {self.codebook_size}), got "
                             f"[{int(indices.min())}, {int(indices.max())}]")

    def forward(self, signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode, quantise, decode.

        Args:
            signal: float32 (B, leads, samples), preprocessed (z-scored per lead).

        Returns:
            recon: float32 (B, leads, samples) reconstruction in the same (z-scored) units.
            indices: int64 (B, frames) FSQ indices.
            codes: float32 (B, frames, d) quantised codes in [-1, 1].
        """
        self.check_signal(signal)
        codes, indices = self.fsq(self.encoder(signal))
        return self.decoder(codes), indices, codes

    @torch.no_grad()
    def encode(self, signal: torch.Tensor) -> torch.Tensor:
        """float32 (B, leads, samples) preprocessed signal -> int64 (B, frames) FSQ indices."""
        self.check_signal(signal)
        _, indices = self.fsq(self.encoder(signal))
        return indices

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """int64 (B, frames) FSQ indices -> float32 (B, leads, samples) reconstruction (z-scored units)."""
        self.check_indices(indices)
        return self.decoder(self.fsq.indices_to_codes(indices))

    def index_module(self) -> nn.Module:
        """The encoder + FSQ as one module whose forward(signal (B, leads, samples) float32) returns
        int64 indices (B, frames); shares weights with this tokenizer (used for ONNX export)."""
        return EcgIndexModule(self.encoder, self.fsq)

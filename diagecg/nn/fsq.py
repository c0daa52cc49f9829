"""Finite scalar quantisation (FSQ, Mentzer et al. 2023, arXiv 2309.15505).

Each of the ``d = len(levels)`` latent channels is squashed into a bounded
interval and rounded to one of ``levels[i]`` values; a frame's code is the
mixed-radix number of its ``d`` digits, so the implicit codebook has
``prod(levels)`` entries (6, 6, 6, 6 -> 1296) and no learned parameters.

Pure tensor maths built from inverse pairs, each undoing the other: ``codes_to_indices`` /
``indices_to_codes``. Everything derived from ``levels`` is a non-persistent
buffer, so a checkpoint stores nothing that can be recomputed. Quantisation
always runs in float32. Only ops with direct ONNX equivalents are used
(Tanh, Round, Cast, Mul, ReduceSum, Div, Mod); the ``atanh`` of the
even-level shift is computed once at construction, not in the graph.

Einstein axes: B batch, T frames, d = len(levels).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def round_ste(z: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer with a straight-through gradient (identity backward)."""
    return z + (torch.round(z) - z).detach()


class FSQ(nn.Module):
    """Finite scalar quantiser: (B, T, d) latents -> (B, T, d) codes in [-1, 1] and (B, T) indices.

    Args:
        levels: number of quantisation levels per latent channel, each >= 2.
        eps: keeps ``tanh`` from reaching the outermost rounding boundary.
    """

    # non-persistent buffers, all derived from `levels`
    levels: torch.Tensor  # (d,) int64
    basis: torch.Tensor  # (d,) int64 mixed-radix place values
    half_l: torch.Tensor  # (d,) float32
    offset: torch.Tensor  # (d,) float32, 0.5 for even level counts
    shift: torch.Tensor  # (d,) float32, atanh(offset / half_l)
    half_width: torch.Tensor  # (d,) float32, levels // 2

    def __init__(self, levels: tuple[int, ...] | list[int], eps: float = 1e-3) -> None:
        super().__init__()
        levels = tuple(int(v) for v in levels)
        if not levels or any(v < 2 for v in levels):
            raise ValueError(f"FSQ levels={levels!r} is invalid: a non-empty tuple of ints >= 2")
        self.levels_tuple = levels
        self.codebook_size = math.prod(levels)
        self.dim = len(levels)
        lv = torch.tensor(levels, dtype=torch.float64)
        basis = torch.cumprod(torch.tensor((1, *levels[:-1]), dtype=torch.int64), dim=0)
        half_l = (lv - 1) * (1 + eps) / 2
        # even level counts need a half-step offset so that the rounded values are
        # symmetric around 0 in count: 6 levels -> {-3, ..., 2}
        offset = torch.where(lv.remainder(2) == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.int64), persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        self.register_buffer("half_l", half_l.float(), persistent=False)
        self.register_buffer("offset", offset.float(), persistent=False)
        self.register_buffer("shift", shift.float(), persistent=False)
        self.register_buffer("half_width", (lv // 2).float(), persistent=False)

    def extra_repr(self) -> str:
        return f"levels={self.levels_tuple}, codebook_size={self.codebook_size}"

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash each channel into (-(L-1)/2 - offset, (L-1)/2 - offset) so rounding gives L values."""
        return torch.tanh(z + self.shift) * self.half_l - self.offset

    def _digits(self, z: torch.Tensor) -> torch.Tensor:
        """(..., d) float32 latents -> (..., d) rounded digits in {-L//2, ...} (straight-through)."""
        return round_ste(self.bound(z))

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """(..., d) latents -> (..., d) codes, normalised to [-1, 1]."""
        return self._digits(z.float()) / self.half_width

    def _scale_and_shift(self, codes: torch.Tensor) -> torch.Tensor:
        return codes * self.half_width + self.half_width  # [-1, 1] -> {0, ..., L-1}

    def _scale_and_shift_inverse(self, digits: torch.Tensor) -> torch.Tensor:
        return (digits - self.half_width) / self.half_width

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., d) codes in [-1, 1] -> (...) int64 indices in [0, prod(levels))."""
        assert codes.shape[-1] == self.dim, f"expected last dim {self.dim}, got {tuple(codes.shape)}"
        digits = torch.round(self._scale_and_shift(codes.float())).to(torch.int64)
        return (digits * self.basis).sum(dim=-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(...) int64 indices -> (..., d) float32 codes in [-1, 1]."""
        digits = (indices.to(torch.int64).unsqueeze(-1) // self.basis) % self.levels  # (..., d)
        return self._scale_and_shift_inverse(digits.float())

    def quantize_levels(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantise each channel on its own: (..., d) latents -> (..., d) codes in [-1, 1] (straight-through)
        and (..., d) int64 levels in ``[0, levels[i])``; no mixed-radix index (``d`` may be large)."""
        assert z.shape[-1] == self.dim, f"FSQ expects last dim {self.dim}, got {tuple(z.shape)}"
        digits = self._digits(z.float())
        return digits / self.half_width, (digits.detach() + self.half_width).to(torch.int64)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantise latents.

        Args:
            z: (B, T, d) latents, any float dtype (cast to float32 here).

        Returns:
            codes: (B, T, d) float32 in [-1, 1], straight-through gradient to ``z``.
            indices: (B, T) int64 in [0, prod(levels)).
        """
        assert z.shape[-1] == self.dim, f"FSQ expects last dim {self.dim}, got {tuple(z.shape)}"
        digits = self._digits(z.float())  # (B, T, d) integers in float32
        codes = digits / self.half_width
        # indices straight from the integer digits: exact, no float round trip
        indices = ((digits.detach() + self.half_width).to(torch.int64) * self.basis).sum(dim=-1)  # (B, T)
        return codes, indices

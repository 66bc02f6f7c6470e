"""Rotary position embeddings in integers: cos and sin tables as 16-bit integers with
ROTARY_BITS fraction bits, x * cos + rotate_half(x) * sin rounded back to x's own scale."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mfmaccel.hw.intops.datapath import INT32, check_range, rounding_shift

ROTARY_BITS = 14  # |cos|, |sin| <= 1 -> at most 2^14, inside int16


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """HF's convention: (x1, x2) -> (-x2, x1) over the two halves of the head dimension."""
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


@dataclass(frozen=True)
class IRotary:
    cos: torch.Tensor  # (positions, head_dim) integers, scale 2^-ROTARY_BITS
    sin: torch.Tensor

    @classmethod
    def build(cls, cos: torch.Tensor, sin: torch.Tensor) -> IRotary:
        """From the float tables a HF rotary embedding produces (positions, head_dim)."""
        scale = 1 << ROTARY_BITS
        return cls(torch.round(cos.double() * scale).long(),
                   torch.round(sin.double() * scale).long())

    def __call__(self, q: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """q: (..., T, head_dim) integers; positions: (T,) indices into the tables."""
        q = q.long()
        mixed = q * self.cos[positions] + rotate_half(q) * self.sin[positions]
        return check_range(rounding_shift(mixed, ROTARY_BITS), INT32, "rotary output")

"""Normalisation in integers: i-sqrt (Newton from 2^ceil(bits/2)), LayerNorm (I-BERT) and
Llama's RMSNorm, each with gamma (and beta) folded into the requantization that follows.

The normalised value is y * floor(2^31 / std) >> (31 - NORM_BITS), i.e. y / std with
NORM_BITS fraction bits; gamma is a GAMMA_BITS-bit integer; their product plus the integer beta
stays within 32 bits for rows up to 4,096 wide (checked), then one dyadic requantization
gives the output (int8 by default).
The input scale cancels in y / std; it only enters through epsilon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intops.datapath import (
    INT8,
    INT32,
    Dyadic,
    IntRange,
    check_range,
    dyadic,
    requantize,
    rounding_shift,
)

NORM_BITS = 10  # fraction bits of the normalised value
GAMMA_BITS = 14
NORM_INPUT = IntRange(24)  # y^2 summed over a row must fit 63 bits
SQRT_ITERATIONS = 8  # enough from this seed for any 63-bit input


def i_sqrt(n: torch.Tensor) -> torch.Tensor:
    """floor(sqrt(n)) for n >= 0, by integer Newton steps from 2^ceil(bit_length / 2); each
    lane stops when a step no longer decreases it."""
    n = n.long()
    if n.numel() and int(n.min()) < 0:
        raise ValueError("i-sqrt takes non-negative integers")
    bit_length = torch.frexp(n.double())[1].long()  # rounding can only overestimate
    x = torch.where(n > 0, torch.ones_like(n) << ((bit_length + 1) // 2), torch.zeros_like(n))
    for _ in range(SQRT_ITERATIONS):
        step = torch.div(x + torch.div(n, x.clamp(min=1), rounding_mode="floor"), 2,
                         rounding_mode="floor")
        better = step < x
        if not bool(better.any()):
            break
        x = torch.where(better, step, x)
    return x


def _normalise(y: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """y / sqrt(variance) with NORM_BITS fraction bits, in integers."""
    std = i_sqrt(variance).clamp(min=1)
    factor = torch.div(torch.full_like(std, 1 << 31), std, rounding_mode="floor")
    return rounding_shift(y * factor.unsqueeze(-1), 31 - NORM_BITS)


def _gamma_integers(gamma: torch.Tensor) -> tuple[torch.Tensor, float]:
    peak = float(gamma.abs().max())
    scale = (peak if peak > 0 else 1.0) / ((1 << (GAMMA_BITS - 1)) - 1)
    return torch.round(gamma.double() / scale).long(), scale


def _epsilon(eps: float, scale_in: float) -> int:
    return math.floor(eps / scale_in**2)


@dataclass(frozen=True)
class ILayerNorm:
    gamma: torch.Tensor  # GAMMA_BITS-bit integers
    beta: torch.Tensor  # int32, at the scale of normalised x gamma
    eps: int  # epsilon at the input's squared scale
    requant: Dyadic
    out: IntRange = INT8

    @classmethod
    def build(cls, gamma: torch.Tensor, beta: torch.Tensor, scale_in: float, scale_out: float,
              *, eps: float = 1e-5, out: IntRange = INT8) -> ILayerNorm:
        gamma_q, gamma_scale = _gamma_integers(gamma)
        product_scale = gamma_scale / 2**NORM_BITS
        beta_q = torch.round(beta.double() / product_scale).long()
        check_range(beta_q, INT32, "LayerNorm beta at its integer scale")
        return cls(gamma_q, beta_q, _epsilon(eps, scale_in), dyadic(product_scale / scale_out),
                   out)

    def normalised(self, q: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std with NORM_BITS fraction bits: shared by every affine output."""
        q = check_range(q.long(), NORM_INPUT, "LayerNorm input")
        width = q.shape[-1]
        mean = torch.div(q.sum(-1, keepdim=True) + width // 2, width, rounding_mode="floor")
        y = q - mean
        variance = torch.div((y * y).sum(-1), width, rounding_mode="floor") + self.eps
        return _normalise(y, variance)

    def affine(self, normalised: torch.Tensor) -> torch.Tensor:
        """gamma, beta and the requantization to this output's scale."""
        return requantize(normalised * self.gamma + self.beta, self.requant, self.out)

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        return self.affine(self.normalised(q))


@dataclass(frozen=True)
class IRMSNorm:
    """Llama's RMSNorm: x / sqrt(mean(x^2) + eps) * weight."""

    gamma: torch.Tensor
    eps: int
    requant: Dyadic
    out: IntRange = INT8

    @classmethod
    def build(cls, weight: torch.Tensor, scale_in: float, scale_out: float,
              *, eps: float = 1e-5) -> IRMSNorm:
        gamma_q, gamma_scale = _gamma_integers(weight)
        if not scale_out > 0:
            raise UserInputError(f"output scale must be positive, got {scale_out}")
        return cls(gamma_q, _epsilon(eps, scale_in),
                   dyadic(gamma_scale / 2**NORM_BITS / scale_out))

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        q = check_range(q.long(), NORM_INPUT, "RMSNorm input")
        mean_square = torch.div((q * q).sum(-1), q.shape[-1], rounding_mode="floor") + self.eps
        return requantize(_normalise(q, mean_square) * self.gamma, self.requant, self.out)

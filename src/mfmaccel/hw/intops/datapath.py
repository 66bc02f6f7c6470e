"""The datapath's integer arithmetic: int8 x int8 -> int32 GEMM with bias, dyadic
requantization (an integer multiply and a rounding arithmetic shift, then saturation), and the
residual add that first aligns both operands to the output scale.

Rounding is round-half-up (add 2^(shift-1), shift right arithmetically): one adder and one
shifter in hardware, the same rule everywhere. Saturation clamps to the output range instead
of wrapping. A value that leaves the 32-bit datapath is an error, never a silent wrap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mfmaccel.errors import UserInputError


@dataclass(frozen=True)
class IntRange:
    bits: int
    signed: bool = True

    @property
    def low(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def high(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.low, self.high)


INT8 = IntRange(8)
INT32 = IntRange(32)


def check_range(x: torch.Tensor, width: IntRange, what: str) -> torch.Tensor:
    """`x` itself, if every value fits `width`; else OverflowError naming `what`."""
    if x.numel() and (int(x.min()) < width.low or int(x.max()) > width.high):
        raise OverflowError(f"{what} leaves the {width.bits}-bit datapath "
                            f"(range {int(x.min())}..{int(x.max())})")
    return x


def int_gemm(a: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None
             ) -> torch.Tensor:
    """(M, K) int8 x (N, K) int8 (+ (N,) int32 bias) -> (M, N) int32 accumulators."""
    check_range(a, INT8, "GEMM input")
    check_range(w, INT8, "GEMM weight")
    acc = a.long() @ w.long().t()
    if bias is not None:
        acc = acc + check_range(bias.long(), INT32, "GEMM bias")
    return check_range(acc, INT32, "GEMM accumulator")


@dataclass(frozen=True)
class Dyadic:
    """The real factor m / 2^shift, m a positive integer below 2^31."""

    m: int
    shift: int

    @property
    def value(self) -> float:
        return self.m / 2**self.shift


def dyadic(scale: float, bits: int = 31, max_shift: int = 62) -> Dyadic:
    """The dyadic factor nearest to `scale` with an m of `bits` bits (most precise shift)."""
    if not scale > 0 or not math.isfinite(scale):
        raise UserInputError(f"a requantization scale must be positive and finite, got {scale}")
    shift = bits - 1 - math.floor(math.log2(scale))
    if shift < 0:
        raise UserInputError(f"scale {scale} is too large for a {bits}-bit multiplier")
    shift = min(shift, max_shift)
    m = round(scale * 2**shift)
    if m >= 1 << bits:  # rounding carried into a new bit
        m, shift = (m + 1) >> 1, shift - 1
    if m == 0:
        raise UserInputError(f"scale {scale} is below the smallest dyadic factor 2^-{max_shift}")
    return Dyadic(m, shift)


def rounding_shift(x: torch.Tensor, shift: int) -> torch.Tensor:
    """x / 2^shift rounded half up (a left shift when `shift` is negative)."""
    if shift <= 0:
        return x << -shift
    return (x + (1 << (shift - 1))) >> shift


def requantize(acc: torch.Tensor, factor: Dyadic, out: IntRange = INT8) -> torch.Tensor:
    """int32 accumulator -> `out` (int8 by default): multiply, round-shift, saturate."""
    check_range(acc, INT32, "requantization input")
    return out.clamp(rounding_shift(acc.long() * factor.m, factor.shift))


def residual_add(a: torch.Tensor, scale_a: float, b: torch.Tensor, scale_b: float,
                 scale_out: float, out: IntRange = INT8, shift: int = 30) -> torch.Tensor:
    """a * scale_a + b * scale_b, requantized to `scale_out`: both operands are aligned to the
    output scale by integer multipliers sharing one shift, added, rounded once, saturated."""
    m_a, m_b = round(scale_a / scale_out * 2**shift), round(scale_b / scale_out * 2**shift)
    if max(m_a, m_b) >= 1 << 31:
        raise UserInputError(f"residual scales {scale_a}, {scale_b} exceed 2x the output "
                             f"scale {scale_out}; raise the output scale")
    total = a.long() * m_a + b.long() * m_b
    return out.clamp(rounding_shift(total, shift))

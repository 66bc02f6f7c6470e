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


class DatapathOverflow(UserInputError, OverflowError):
    """A value that would not fit its register: the scales chosen for the model leave the
    datapath, so the conversion (or its calibration data) must change. Never a silent wrap."""


def check_range(x: torch.Tensor, width: IntRange, what: str) -> torch.Tensor:
    """`x` itself, if every value fits `width`; else DatapathOverflow naming `what`."""
    if x.numel() and (int(x.min()) < width.low or int(x.max()) > width.high):
        raise DatapathOverflow(f"{what} leaves the {width.bits}-bit datapath (range "
                               f"{int(x.min())}..{int(x.max())}); calibrate on more "
                               "representative data or choose coarser scales")
    return x


FLOAT64_EXACT = 1 << 53  # every integer below this is exact in float64


def exact_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Integer a @ b, computed with float64 BLAS (fast; int64 matmul is a plain loop) and exact
    because every partial sum stays below 2^53, which is checked."""
    bound = int(a.abs().max()) * int(b.abs().max()) * a.shape[-1] if a.numel() and b.numel() \
        else 0
    if bound >= FLOAT64_EXACT:
        return a.long() @ b.long()
    return (a.double() @ b.double()).long()


def int_gemm(a: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
             row_shift: torch.Tensor | None = None) -> torch.Tensor:
    """(M, K) int8 x (N, K) int8 (+ (N,) int32 bias) -> (M, N) int32 accumulators.
    `row_shift` ((M, 1), from `token_shifts`): row i of `a` is 2^s_i coarser, so its bias is
    loaded into the accumulators rounded and shifted right by s_i."""
    check_range(a, INT8, "GEMM input")
    check_range(w, INT8, "GEMM weight")
    acc = exact_matmul(a, w.t())
    if bias is not None:
        bias = check_range(bias.long(), INT32, "GEMM bias")[None, :]
        acc = acc + (bias if row_shift is None else rounding_shift(bias, row_shift))
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


@dataclass(frozen=True)
class DyadicVector:
    """One dyadic factor per output channel (per-channel weight scales), sharing one shift so
    the hardware needs one shifter: m[c] / 2^shift."""

    m: torch.Tensor
    shift: int

    @property
    def value(self) -> torch.Tensor:
        return self.m.double() / 2**self.shift


def dyadic_vector(scales: torch.Tensor, bits: int = 31) -> DyadicVector:
    """Per-channel factors with the shift the largest one allows."""
    if scales.numel() == 0 or not bool((scales > 0).all()):
        raise UserInputError("per-channel requantization scales must all be positive")
    top = dyadic(float(scales.max()), bits)
    m = torch.round(scales.double() * 2**top.shift).long()
    if int(m.max()) >= 1 << bits:
        m = torch.round(scales.double() * 2 ** (top.shift - 1)).long()
        return DyadicVector(m, top.shift - 1)
    return DyadicVector(m, top.shift)


def rounding_shift(x: torch.Tensor, shift: int | torch.Tensor) -> torch.Tensor:
    """x / 2^shift rounded half up (a left shift when an int `shift` is negative); a tensor
    `shift` (>= 0, broadcast against x) shifts each element by its own amount."""
    if isinstance(shift, torch.Tensor):  # 2^(shift-1) so that a shift of 63 stays in int64
        return (x + torch.where(shift > 0, 1 << (shift - 1).clamp(min=0), 0)) >> shift
    if shift <= 0:
        return x << -shift
    return (x + (1 << (shift - 1))) >> shift


def requantize(acc: torch.Tensor, factor: Dyadic | DyadicVector, out: IntRange = INT8,
               row_shift: torch.Tensor | None = None) -> torch.Tensor:
    """int32 accumulator -> `out` (int8 by default): multiply, round-shift, saturate. A
    `DyadicVector` applies one factor per channel of the last dimension; `row_shift` (one per
    row, from `token_shifts`) shortens the shift of each row's outputs."""
    check_range(acc, INT32, "requantization input")
    product = acc.long() * factor.m
    if row_shift is None:
        return out.clamp(rounding_shift(product, factor.shift))
    shift = factor.shift - row_shift
    if int(shift.min()) < 1:
        raise DatapathOverflow(f"a per-token shift of {int(row_shift.max())} exceeds the "
                               f"requantization shift {factor.shift}; use less headroom")
    return out.clamp(rounding_shift(product, shift))


def token_shifts(x: torch.Tensor, out: IntRange = INT8) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token power-of-two scales, integer-only: each row of `x` shifted right by just
    enough to fit `out` (a leading-zero count of the row's largest magnitude), rounded.
    Returns (the rows in `out`, the shift per row); a GEMM on them compensates with its
    requantization shift lowered by the row's shift (`requantize(..., row_shift=...)`)."""
    largest = x.abs().amax(-1, keepdim=True).clamp(min=1)
    bits = torch.floor(torch.log2(largest.double())).long() + 1  # bit length, exact below 2^53
    shift = (bits - (out.bits - 1)).clamp(min=0)
    return out.clamp(rounding_shift(x, shift)), shift


def residual_factors(scale_a: float, scale_b: float, scale_out: float) -> tuple[int, int, int]:
    """`residual_add`'s integers (m_a, m_b, shift): both operands' multipliers to the output
    scale, sharing the largest shift that keeps both below 2^31."""
    ratio = max(scale_a, scale_b) / scale_out
    if not ratio > 0 or ratio >= 2**30:
        raise UserInputError(f"residual scales {scale_a}, {scale_b} are not representable "
                             f"against the output scale {scale_out}")
    shift = min(62, 30 - math.ceil(math.log2(ratio)))
    return round(scale_a / scale_out * 2**shift), round(scale_b / scale_out * 2**shift), shift


def residual_add(a: torch.Tensor, scale_a: float, b: torch.Tensor, scale_b: float,
                 scale_out: float, *, out: IntRange = INT8) -> torch.Tensor:
    """a * scale_a + b * scale_b, requantized to `scale_out`: both operands are aligned to the
    output scale by integer multipliers sharing one shift (the largest that keeps both below
    2^31), added, rounded once, saturated. Operands are at most 32-bit."""
    m_a, m_b, shift = residual_factors(scale_a, scale_b, scale_out)
    total = check_range(a.long(), INT32, "residual operand") * m_a + \
        check_range(b.long(), INT32, "residual operand") * m_b
    return out.clamp(rounding_shift(total, shift))

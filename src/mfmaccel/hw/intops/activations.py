"""Non-linear units in integers: i-exp and the integer softmax, i-GELU (I-BERT), and the sigmoid
and SiLU that Llama-family MLPs need.

Each unit is built once from its input scale (`build`): the float constants of the
approximation become integers there, and the output scale is recorded. The call takes integer
tensors only. `build` refuses scales that would push an intermediate past 32 bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intops.datapath import INT32, check_range, rounding_shift

LN2 = math.log(2)
EXP_A, EXP_B, EXP_C = 0.3585, 1.353, 0.344  # exp(p) ~ A (p + B)^2 + C on (-ln2, 0]
ERF_A, ERF_B = -0.2888, -1.769  # erf(x) ~ sign(x) [A (min(|x|, -B) + B)^2 + 1]
# the finest input scale whose i-exp peak, about (B^2 + C/A) / S^2, fits 30 bits
EXP_FINEST_SCALE = math.sqrt((EXP_B**2 + EXP_C / EXP_A) / 2**30) * 1.001
MAX_EXP_SHIFT = 31  # 2^-31 of the largest exp value is zero: larger shifts change nothing
# softmax output bits in the integer programs: at 8 bits, over a few hundred tokens most
# probabilities round to 0 (integer minilm-l6: mean cosine 0.979 at 8 bits, 0.9835 at 12, both
# in benchmarks/results); the context sum p x v stays below 2^12 x 2^7 whatever the length
PROBABILITY_BITS = 12


@dataclass(frozen=True)
class IExp:
    """exp(x) for x <= 0: x = -z ln2 + p, exp(p) by the quadratic, then >> z."""

    q_ln2: int
    q_b: int
    q_c: int
    scale_out: float

    @classmethod
    def build(cls, scale: float) -> IExp:
        q_ln2 = math.floor(LN2 / scale)
        if q_ln2 < 1:
            raise UserInputError(f"input scale {scale} is coarser than ln 2; i-exp needs finer")
        unit = cls(q_ln2, math.floor(EXP_B / scale), math.floor(EXP_C / (EXP_A * scale**2)),
                   EXP_A * scale**2)
        if unit.peak > INT32.high:
            raise UserInputError(f"input scale {scale} is too fine: i-exp would need "
                                 f"{unit.peak.bit_length()} bits; requantize to a coarser scale")
        return unit

    @property
    def peak(self) -> int:
        """The largest output (at x = 0)."""
        return self.q_b**2 + self.q_c

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        q = q.long()
        if q.numel() and int(q.max()) > 0:
            raise ValueError("i-exp takes x <= 0; subtract the row maximum first")
        z = torch.div(-q, self.q_ln2, rounding_mode="floor")
        p = q + z * self.q_ln2
        return ((p + self.q_b) ** 2 + self.q_c) >> z.clamp(max=MAX_EXP_SHIFT)


def i_softmax(q: torch.Tensor, exp: IExp, out_bits: int = PROBABILITY_BITS) -> torch.Tensor:
    """Softmax over the last dimension, unsigned with scale 2^-out_bits: the 2^k numerator makes
    the quotient carry information (without it every output would be 0 or 1). The row sum is
    kept at 32 + log2(row length) bits."""
    e = exp(q.long() - q.long().amax(-1, keepdim=True))
    total = e.sum(-1, keepdim=True)
    return torch.div(e << out_bits, total, rounding_mode="floor").clamp(max=(1 << out_bits) - 1)


@dataclass(frozen=True)
class IGelu:
    """GELU(x) = x/2 (1 + erf(x / sqrt 2)), erf by I-BERT's clipped quadratic; 1/sqrt 2 is
    folded into the erf's scale."""

    q_b: int
    q_c: int  # 1 / erf_scale: the quadratic's constant and also "1" at the erf's scale
    scale_out: float

    @classmethod
    def build(cls, scale: float) -> IGelu:
        erf_in = scale / math.sqrt(2)
        erf_scale = ERF_A * erf_in**2  # negative, like the integer polynomial it scales
        unit = cls(math.floor(ERF_B / erf_in), math.floor(1 / erf_scale),
                   -scale * erf_scale / 2)  # the sign goes into the integer: positive scale
        if max(unit.q_b**2, abs(unit.q_c)) > INT32.high // 2:
            raise UserInputError(f"input scale {scale} is too fine for i-GELU's 32-bit datapath")
        return unit

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        q = q.long()
        clipped = torch.minimum(q.abs(), torch.tensor(-self.q_b))
        erf = torch.sign(q) * ((clipped + self.q_b) ** 2 + self.q_c)
        return check_range(-q * (erf + self.q_c), INT32, "i-GELU output")


@dataclass(frozen=True)
class ISigmoid:
    """sigmoid(x) = e / (e + 1) with e = exp(-|x|) from i-exp (mirrored for x > 0);
    unsigned output with scale 2^-out_bits."""

    exp: IExp
    q_one: int  # 1.0 at the exp's output scale
    out_bits: int = 15

    @classmethod
    def build(cls, scale: float, out_bits: int = 15) -> ISigmoid:
        exp = IExp.build(scale)
        return cls(exp, math.floor(1 / exp.scale_out), out_bits)

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        q = q.long()
        e = self.exp(-q.abs())
        low = torch.div(e << self.out_bits, e + self.q_one, rounding_mode="floor")  # x <= 0
        return torch.where(q > 0, (1 << self.out_bits) - low, low)


def i_silu(q: torch.Tensor, sigmoid: ISigmoid, sigmoid_shift: int = 0) -> torch.Tensor:
    """x * sigmoid(x), at scale input_scale * 2^-out_bits; the sigmoid sees x `sigmoid_shift`
    bits coarser when x's scale is finer than i-exp can take."""
    coarse = q.long() if not sigmoid_shift else rounding_shift(q.long(), sigmoid_shift)
    return check_range(q.long() * sigmoid(coarse), INT32, "i-SiLU output")

"""What the integer programs share. A linear layer as the accelerator runs it: int8 weights
(symmetric, one scale per output channel; fewer bits on the same grid when a layer is given
them), an int32 bias at the accumulator's scale, and a per-channel dyadic requantization to the
next tensor's scale; SmoothQuant factors and the row division that folds them into the layer
before; the constants both programs use."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intops import (
    INT8,
    INT32,
    Dyadic,
    DyadicVector,
    IExp,
    IntRange,
    check_range,
    dyadic,
    dyadic_vector,
    int_gemm,
    requantize,
    token_shifts,
)
from mfmaccel.hw.intops.activations import EXP_FINEST_SCALE, PROBABILITY_BITS

INT16 = IntRange(16)
MASKED = -(1 << 30)  # a score far below any real one: i-exp turns it into exactly 0
SMOOTHING_ALPHA = 0.5
# the coarsest score scale i-exp gets: 2^8 steps across one ln 2 of its polynomial's range
EXP_COARSEST_SCALE = math.log(2) / 2**8
# per-token scales of GEMM inputs: up to 2^8 finer than the calibrated per-tensor scale, for the
# tokens whose values are small
TOKEN_HEADROOM = 8


@dataclass(frozen=True)
class ProductInputs:
    """The precision of the tensors a product reads: the GEMMs' inputs, q, k, v and the
    attention context (signed), and the softmax's probabilities (unsigned). The other tensors
    (the int16 residual stream, the GELU's input, the int32 accumulators) keep their widths."""

    signed: IntRange = INT8
    probability_bits: int = PROBABILITY_BITS

    @property
    def probabilities(self) -> IntRange:
        return IntRange(self.probability_bits, signed=False)


DEFAULT_INPUTS = ProductInputs()
LOWEST_ACTIVATION_BITS = 2


def product_inputs(bits: int | None, per_token: bool) -> ProductInputs:
    """None: the programs' own precision (int8, 12-bit probabilities); b: every tensor a product
    reads at b bits, the probabilities included (unsigned), so that a spiking program of unit
    spikes carries any of them in at most 2^b - 1 spikes. Per-token scales bring tokens back
    to int8 only, so b bits need static scales."""
    if bits is None:
        return DEFAULT_INPUTS
    if per_token:
        raise UserInputError(f"--activation-bits {bits} needs static scales: per-token scales "
                             "bring each token to int8 only (build with per_token=False)")
    if not LOWEST_ACTIVATION_BITS <= bits <= INT8.bits:
        raise UserInputError(f"--activation-bits {bits}: choose {LOWEST_ACTIVATION_BITS} to "
                             f"{INT8.bits} (the datapath is sized for int8 products)")
    return ProductInputs(IntRange(bits), bits)


def gemm_input_scale(scale: float, per_token: bool) -> float:
    """The scale a GEMM input is requantized to: its calibrated one, or with `per_token`
    2^TOKEN_HEADROOM finer (in int32), for `token_shifts` to bring each token back to int8."""
    return scale / 2**TOKEN_HEADROOM if per_token else scale


def score_softmax(score_scale: float) -> tuple[IExp, Dyadic | None]:
    """i-exp for attention scores at `score_scale` (1/sqrt(d) folded in), and the multiplier
    that first brings the scores to its scale: coarser where theirs is finer than i-exp's 32
    bits can take, finer (a power of two) where theirs is too coarse for its polynomial
    (q and k of few bits)."""
    exp_scale = max(score_scale, EXP_FINEST_SCALE)
    if exp_scale > EXP_COARSEST_SCALE:
        exp_scale /= 2 ** math.ceil(math.log2(exp_scale / EXP_COARSEST_SCALE))
    rescale = dyadic(score_scale / exp_scale) if exp_scale != score_scale else None
    return IExp.build(exp_scale), rescale


def smoothing(activation: torch.Tensor, weights: Sequence[torch.Tensor],
              alpha: float = SMOOTHING_ALPHA) -> torch.Tensor:
    """SmoothQuant's per-channel factors s_j = a_j^alpha / w_j^(1 - alpha): dividing the
    activation by s (folded into the LayerNorm before it) and multiplying the weights' columns
    by s (folded into the GEMMs after it) leaves the product unchanged and moves outlier
    channels' range from the int8 activation into the per-channel-scaled weights."""
    w = torch.stack([weight.detach().double().abs().amax(0) for weight in weights]).amax(0)
    return activation.clamp(min=1e-5) ** alpha / w.clamp(min=1e-5) ** (1 - alpha)


def rows_divided(linear: nn.Linear, divisors: torch.Tensor) -> nn.Linear:
    """A copy of `linear` whose outputs are divided channel by channel."""
    copy = nn.Linear(linear.in_features, linear.out_features, linear.bias is not None,
                     dtype=torch.float64)
    with torch.no_grad():
        copy.weight.copy_(linear.weight.double() / divisors[:, None])
        if linear.bias is not None:
            copy.bias.copy_(linear.bias.double() / divisors)
    return copy


WEIGHT_BITS = INT8.bits  # a linear's weight bits unless it is given fewer
LOWEST_WEIGHT_BITS = 2


def weight_integers(weight: torch.Tensor, bits: int = WEIGHT_BITS
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(integer weight, per-output-channel scales) by symmetric round-to-nearest onto
    +-(2^(bits-1) - 1): int8 at 8 bits, fewer levels on the same kind of grid below."""
    w = weight.detach().double()
    scales = w.abs().amax(1).clamp(min=1e-12) / (2 ** (bits - 1) - 1)
    return torch.round(w / scales[:, None]).long(), scales


def checked_weight_bits(weight_bits: Mapping[str, int] | None, names: Iterable[str],
                        example: str) -> dict[str, int]:
    """Every one of `names` (a program's linears, as `runtime.parts.quantizable_parts` names
    them) -> its weight bits: those `weight_bits` gives, 8 for the rest. An unknown name or a
    bit-width outside 2-8 is refused in one line; `example`: a name to show."""
    chosen = dict(weight_bits or {})
    known = list(names)
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise UserInputError(f"weight bits for {unknown[0]!r}, which is not a linear of this "
                             f"program; name its linears as quantizable_parts does, e.g. "
                             f"{example!r}")
    for name, bits in chosen.items():
        if isinstance(bits, bool) or not isinstance(bits, int) \
                or not LOWEST_WEIGHT_BITS <= bits <= WEIGHT_BITS:
            raise UserInputError(f"{bits!r} weight bits for {name!r}: choose an integer from "
                                 f"{LOWEST_WEIGHT_BITS} to {WEIGHT_BITS} (the datapath is sized "
                                 "for int8 weights)")
    return {name: chosen.get(name, WEIGHT_BITS) for name in known}


@dataclass(frozen=True)
class IntLinear:
    weight: torch.Tensor  # (N, K) int8 values
    bias: torch.Tensor | None  # (N,) int32 at scale_in * weight scale
    requant: DyadicVector
    out: IntRange = INT8
    weight_bits: int = WEIGHT_BITS  # the weights lie within +-(2^(bits-1) - 1)

    @classmethod
    def build(cls, linear: nn.Linear, scale_in: float, scale_out: float,
              *, out: IntRange = INT8, smoothing: torch.Tensor | None = None,
              weight_bits: int = WEIGHT_BITS) -> IntLinear:
        """From a float layer; `smoothing` (per input channel) multiplies the weight's columns
        when the layer's input was divided by it (SmoothQuant's migration); `weight_bits`: the
        weights' symmetric per-channel grid (`weight_integers`)."""
        weight = linear.weight.detach().double()
        if smoothing is not None:
            weight = weight * smoothing[None, :]
        weight, w_scales = weight_integers(weight, weight_bits)
        accumulator_scales = scale_in * w_scales
        bias = None
        if linear.bias is not None:
            bias = torch.round(linear.bias.detach().double() / accumulator_scales).long()
            check_range(bias, INT32, "bias at the accumulator's scale")
        return cls(weight, bias, dyadic_vector(accumulator_scales / scale_out), out,
                   weight_bits)

    def __call__(self, x: torch.Tensor, row_shift: torch.Tensor | None = None) -> torch.Tensor:
        """`row_shift`: per-token power-of-two scales of `x` (`intops.token_shifts`); a row
        2^s coarser gets its bias 2^s smaller (shifted as it loads into the accumulators)."""
        flat = x.reshape(-1, x.shape[-1])
        shifts = None if row_shift is None else row_shift.reshape(-1, 1)
        acc = int_gemm(flat, self.weight, self.bias, shifts)
        return requantize(acc, self.requant, self.out, shifts).view(*x.shape[:-1], -1)


def requantize_into(linear: IntLinear, x: torch.Tensor, factor: Dyadic, per_token: bool,
                    out: IntRange = INT8) -> torch.Tensor:
    """`x` requantized into `linear`: to `out` at a static scale, or to a 2^TOKEN_HEADROOM
    finer one in int32 and then to int8 with one power-of-two scale per token."""
    if not per_token:
        return linear(requantize(x, factor, out))
    return linear(*token_shifts(requantize(x, factor, INT32)))

"""The integer grid a weight matrix is quantized onto, and round-to-nearest onto it.

A `QuantSpec` says how many bits, whether the grid is symmetric (zero point fixed at the
middle) or asymmetric (a zero point per group), and the group size along the input dimension
(`None`: one group per output channel). Scales and zero points are what make a b-bit model
bigger than b bits per weight; `QuantSpec.bits_per_weight` counts them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mfmaccel.errors import UserInputError

SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8)
SCALE_BYTES = 2  # scales and zero points are stored as fp16


@dataclass(frozen=True)
class QuantSpec:
    bits: int
    group_size: int | None = 128  # None: per output channel
    symmetric: bool = False

    def __post_init__(self) -> None:
        if self.bits not in SUPPORTED_BITS:
            raise UserInputError(
                f"unsupported bit-width {self.bits}; choose one of {list(SUPPORTED_BITS)}"
            )
        if self.group_size is not None and self.group_size < 1:
            raise UserInputError(f"group size must be a positive integer, got {self.group_size}")

    @property
    def label(self) -> str:
        group = "c" if self.group_size is None else f"g{self.group_size}"
        return f"int{self.bits}-{group}-{'sym' if self.symmetric else 'asym'}"

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2**self.bits - 1

    def groups(self, in_features: int) -> int:
        return 1 if self.group_size is None else -(-in_features // self.group_size)

    def nbytes(self, out_features: int, in_features: int) -> int:
        """True storage of one weight matrix: packed integers plus fp16 scales (and zeros)."""
        ints = -(-out_features * in_features * self.bits // 8)
        per_group = SCALE_BYTES * (1 if self.symmetric else 2)
        return ints + out_features * self.groups(in_features) * per_group

    def bits_per_weight(self, out_features: int, in_features: int) -> float:
        return 8 * self.nbytes(out_features, in_features) / (out_features * in_features)


INT8_PER_CHANNEL = QuantSpec(8, None, True)  # the spec `QuantLinear`'s int8 kernel serves


@dataclass
class QuantizedTensor:
    """Integers `q` (int16, unpacked) with per-(row, group) `scale` and `zero` (fp32)."""

    q: torch.Tensor  # (out, in)
    scale: torch.Tensor  # (out, groups)
    zero: torch.Tensor  # (out, groups); 0 for symmetric grids
    spec: QuantSpec

    @property
    def shape(self) -> torch.Size:
        return self.q.shape


def _grouped(weight: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """(out, groups, group_size) view, zero-padded at the end when `in` is not a multiple."""
    out, inp = weight.shape
    size = inp if spec.group_size is None else spec.group_size
    pad = spec.groups(inp) * size - inp
    if pad:
        weight = torch.nn.functional.pad(weight, (0, pad))
    return weight.reshape(out, -1, size)


def grid_params(weight: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max (scale, zero) per (row, group) for `weight` (out, in)."""
    grouped = _grouped(weight.float(), spec)
    if spec.symmetric:  # max |x| without a weight-sized |x|
        scale = _stored(torch.maximum(grouped.amax(-1), -grouped.amin(-1)) / spec.qmax)
        return scale, torch.zeros_like(scale)
    low, high = grouped.amin(-1).clamp(max=0), grouped.amax(-1).clamp(min=0)
    scale = _stored((high - low) / spec.qmax)
    return scale, torch.round(-low / scale).clamp(0, spec.qmax)


def _stored(scale: torch.Tensor) -> torch.Tensor:
    """Scales rounded to fp16 now, so the model in memory equals the one reloaded from disk."""
    return scale.clamp(min=1e-6).half().float()


def expand(per_group: torch.Tensor, spec: QuantSpec, in_features: int) -> torch.Tensor:
    """(out, groups) -> (out, in): each column gets its group's value. One group per row stays
    (out, 1) and broadcasts: per-channel grids need no weight-sized copy of their scales."""
    if per_group.shape[1] == 1:
        return per_group
    size = in_features if spec.group_size is None else spec.group_size
    return per_group.repeat_interleave(size, dim=1)[:, :in_features]


def quantize_with(weight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                  spec: QuantSpec) -> torch.Tensor:
    """Integers of `weight` on a given grid (round to nearest, clamped)."""
    inp = weight.shape[1]
    q = weight.float() / expand(scale, spec, inp)  # one weight-sized temporary, then in place
    return q.round_().add_(expand(zero, spec, inp)).clamp_(spec.qmin, spec.qmax).to(torch.int16)


def quantize_rtn(weight: torch.Tensor, spec: QuantSpec) -> QuantizedTensor:
    """Round-to-nearest onto the min-max grid of each (row, group)."""
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight, got shape {tuple(weight.shape)}")
    scale, zero = grid_params(weight, spec)
    return QuantizedTensor(quantize_with(weight, scale, zero, spec), scale, zero, spec)


def dequantize(qt: QuantizedTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    inp = qt.q.shape[1]
    zero, scale = expand(qt.zero, qt.spec, inp), expand(qt.scale, qt.spec, inp)
    return ((qt.q.float() - zero) * scale).to(dtype)

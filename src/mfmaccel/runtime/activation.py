"""int8 activations for W8A8 models, the number format the integer accelerator runs.

The input of every int8 linear layer is rounded to symmetric int8, multiplied with the int8
weight with exact integer accumulation, and rescaled once. Two granularities:

* `token`: each token's scale is its own largest |x| (dynamic, computed at run time): the best
  quality, but the scale is data the hardware must compute;
* `tensor`: one scale per layer, calibrated once on real text (the largest |x| seen, or a
  percentile of |x| that clips rare outliers): a constant the accelerator folds into its
  requantization, so inference stays integer-only. Its quality cost is what we measure.
"""

from __future__ import annotations

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.runtime.choices import ActivationMode

ACT_QMAX = 127  # symmetric: -127..127, so negation never overflows


def check_act_mode(mode: str) -> None:
    if mode not in tuple(ActivationMode):
        raise UserInputError(f"unknown activation quantization '{mode}'; choose one of "
                             f"{', '.join(ActivationMode)}")


def per_token_scale(x: torch.Tensor) -> torch.Tensor:
    """(M, 1) scales mapping each row's largest |x| to 127."""
    return x.abs().amax(-1, keepdim=True).clamp(min=1e-8) / ACT_QMAX


def quantize_activations(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Round-to-nearest onto symmetric int8, saturating what lies beyond the scale's range."""
    return torch.clamp(torch.round(x / scale), -ACT_QMAX, ACT_QMAX).to(torch.int8)


def int8_matmul(q_x: torch.Tensor, q_weight: torch.Tensor) -> torch.Tensor:
    """(M, K) int8 @ (N, K) int8 weight -> (M, N) int32, accumulated exactly.

    Computed with float64 BLAS: every partial sum of int8 products stays below 2^53 (for any
    K under 5e11), so the result is exact; `torch._int_mm`'s CPU path was far slower here in
    a quick check (no benchmark records it)."""
    return (q_x.double() @ q_weight.double().t()).to(torch.int32)



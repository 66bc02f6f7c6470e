"""A LayerNorm's affine and DINOv2's LayerScale folded into the linear beside them.

Why: a pre-norm block normalises, then multiplies by gamma and adds beta, a full pass over the
activations before the product that reads them; the product can take both over (its input
columns scaled by gamma, beta pushed through it into the bias), so the norm only normalises.
LayerScale multiplies a product's output by lambda, which scales that product's rows instead.
Both are exact up to rounding; the fold is computed in float64 and rounded once. Only float
layers fold: a packed integer layer cannot absorb a per-column or per-row factor exactly, and
None tells the caller to keep the norm's affine (or the LayerScale) as it is.

Every fold builds a new layer: the input model's weights are never written.
"""

from __future__ import annotations

import torch
from torch import nn

from mfmaccel.execute.fusion_linear import ProjectionGroup, float_linear, is_float_linear


def _float64(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.detach().double()


def with_input_affine(layer: nn.Module, *, gamma: torch.Tensor | None,
                      beta: torch.Tensor | None) -> nn.Module | None:
    """One linear computing `layer(gamma * x + beta)`: W diag(gamma), b + W beta; None when
    `layer` is not a float linear."""
    if not is_float_linear(layer):
        return None
    weight, bias = _float64(layer.weight), _float64(layer.bias)
    if beta is not None:
        shift = weight @ _float64(beta)
        bias = shift if bias is None else bias + shift
    if gamma is not None:
        weight = weight * _float64(gamma)
    dtype = layer.weight.dtype
    return float_linear(weight.to(dtype), None if bias is None else bias.to(dtype))


def with_output_scale(layer: nn.Module, scale: torch.Tensor) -> nn.Module | None:
    """One linear computing `scale * layer(x)`: diag(scale) W, scale * b; None when `layer` is
    not a float linear."""
    if not is_float_linear(layer):
        return None
    factor = _float64(scale)
    bias = None if layer.bias is None else (_float64(layer.bias) * factor).to(layer.bias.dtype)
    weight = (_float64(layer.weight) * factor[:, None]).to(layer.weight.dtype)
    return float_linear(weight, bias)


def fold_norm_into_group(norm: nn.LayerNorm, group: ProjectionGroup) -> bool:
    """The norm's affine moved into the group's stacked product; False, nothing changed, when
    the group did not stack or stacked packed integers."""
    if group.fused is None:
        return False
    folded = with_input_affine(group.fused, gamma=norm.weight, beta=norm.bias)
    if folded is None:
        return False
    group.fused = folded
    return True

"""Linear layers that read one input, joined into one: q/k/v, gate/up.

Why: each product costs a kernel launch, an OpenMP fork/join and, in a decode step, a pass
over a weight too small to stream at full bandwidth; one product over the stacked rows does
the same arithmetic once. Float layers stack into a `FewRowsLinear` (so the few-row path
still applies); packed `QuantLinear`s of one spec stack their integers and row scales into one
`QuantLinear`, whose int8 kernel already multiplies the int8 rows directly (dequantisation
sits inside that GEMM), so stacking them is the whole fusion. A normalisation's per-column
scale folds into the stacked float weight's input columns, exact up to rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mfmaccel.runtime.fewrows import FewRowsLinear
from mfmaccel.runtime.grid import QuantizedTensor
from mfmaccel.runtime.linear import QuantLinear


class ProjectionGroup(nn.Module):
    """Several projections of one input: one stacked layer split after, or, where the layers
    cannot stack (mixed quantization specs), the layers themselves. Returns their outputs."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.widths = [layer.out_features for layer in layers]
        stacked = stack_linears(layers)
        self.fused = stacked
        self.parts = None if stacked is not None else nn.ModuleList(layers)

    @property
    def is_fused(self) -> bool:
        return self.fused is not None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.fused is None:
            return tuple(layer(x) for layer in self.parts)
        return self.fused(x).split(self.widths, dim=-1)

    def extra_repr(self) -> str:
        return f"widths={self.widths}, fused={self.is_fused}"


def is_float_linear(layer: nn.Module) -> bool:
    return type(layer) in (nn.Linear, FewRowsLinear)


def stack_linears(layers: Sequence[nn.Module]) -> nn.Module | None:
    """One layer computing `cat([layer(x) for layer in layers], -1)`, or None when they do not
    stack (different kinds, input widths, quantization specs or int8 activation settings)."""
    if len({layer.in_features for layer in layers}) != 1:
        return None
    if all(is_float_linear(layer) for layer in layers):
        return _stack_float(layers)
    if all(isinstance(layer, QuantLinear) for layer in layers):
        return _stack_quantized(layers)
    return None


def _stacked_bias(layers: Sequence[nn.Module]) -> torch.Tensor | None:
    """Biases side by side (zeros for a layer without one), None when none has one."""
    if all(layer.bias is None for layer in layers):
        return None
    like = next(layer.bias for layer in layers if layer.bias is not None)
    return torch.cat([layer.bias.detach() if layer.bias is not None
                      else like.new_zeros(layer.out_features) for layer in layers])


def _stack_float(layers: Sequence[nn.Module]) -> FewRowsLinear:
    weight = torch.cat([layer.weight.detach() for layer in layers])
    return float_linear(weight, _stacked_bias(layers))


def float_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> FewRowsLinear:
    """A `FewRowsLinear` holding these tensors (built on the meta device: no random init)."""
    layer = FewRowsLinear(weight.shape[1], weight.shape[0], bias=bias is not None,
                          device="meta")
    layer.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        layer.bias = nn.Parameter(bias, requires_grad=False)
    return layer


def _activation_setting(layer: QuantLinear) -> tuple:
    scale = getattr(layer, "act_scale", None)
    return layer.activations, None if scale is None else float(scale)


def _stack_quantized(layers: Sequence[QuantLinear]) -> QuantLinear | None:
    """Integers, scales and zero points side by side under the layers' common spec; the int8
    activation setting (W8A8) carries over when every layer has the same one."""
    if len({layer.spec for layer in layers}) != 1 or \
            len({_activation_setting(layer) for layer in layers}) != 1:
        return None
    parts = [layer.quantized() for layer in layers]
    joined = QuantizedTensor(torch.cat([p.q for p in parts]), torch.cat([p.scale for p in parts]),
                             torch.cat([p.zero for p in parts]), parts[0].spec)
    fused = QuantLinear.from_quantized(joined, _stacked_bias(layers))
    mode, scale = _activation_setting(layers[0])
    if mode is not None:
        fused.set_activations(mode, scale)
    return fused


def fold_column_scale(group: ProjectionGroup, scale: torch.Tensor) -> bool:
    """Multiply the stacked float weight's input columns by `scale` (a norm's weight), so the
    norm before it can drop its own multiply. False, and nothing changed, for packed layers:
    their integers cannot absorb a per-column factor exactly."""
    layer = group.fused
    if layer is None or not is_float_linear(layer):
        return False
    layer.weight = nn.Parameter(layer.weight.detach() * scale.detach().to(layer.weight.dtype),
                                requires_grad=False)
    return True

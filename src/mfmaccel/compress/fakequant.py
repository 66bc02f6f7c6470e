"""Temporarily give chosen linear layers their quantized-then-dequantized weights, so a probe
measures exactly what the packed model will compute, then put the originals back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from mfmaccel.runtime.anatomy import weight_matrix
from mfmaccel.runtime.grid import QuantSpec, dequantize, quantize_rtn


def rtn_weight(layer: nn.Module, spec: QuantSpec) -> torch.Tensor:
    """The layer's weight after round-to-nearest, in the layer's own layout and dtype."""
    dq = dequantize(quantize_rtn(weight_matrix(layer).detach(), spec), layer.weight.dtype)
    return dq.T if type(layer).__name__ == "Conv1D" else dq


@contextmanager
def fake_quantized(layers: dict[str, tuple[nn.Module, QuantSpec]]) -> Iterator[None]:
    """Within the block, each layer computes with its RTN-quantized weight."""
    originals = {name: layer.weight.data for name, (layer, _) in layers.items()}
    try:
        for layer, spec in layers.values():
            layer.weight.data = rtn_weight(layer, spec)
        yield
    finally:
        for name, (layer, _) in layers.items():
            layer.weight.data = originals[name]

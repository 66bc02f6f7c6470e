"""`QuantLinear`: a linear layer whose weight lives as packed b-bit integers plus fp16 scales
(and zero points). It computes with the dequantized weight, built once on first use; its
`nbytes` is the true storage every report quotes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mfmaccel.compress.quant.grid import QuantizedTensor, QuantSpec, dequantize
from mfmaccel.compress.quant.pack import pack_bits, unpack_bits


class QuantLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, spec: QuantSpec,
                 bias: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features, self.spec = in_features, out_features, spec
        groups = spec.groups(in_features)
        count = in_features * out_features
        self.register_buffer("qweight", torch.zeros(-(-count * spec.bits // 8), dtype=torch.uint8))
        self.register_buffer("scales", torch.zeros(out_features, groups, dtype=torch.float16))
        if not spec.symmetric:
            self.register_buffer("zeros", torch.zeros(out_features, groups, dtype=torch.float16))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._weight: torch.Tensor | None = None

    @classmethod
    def from_quantized(cls, qt: QuantizedTensor, bias: torch.Tensor | None = None) -> QuantLinear:
        out, inp = qt.shape
        layer = cls(inp, out, qt.spec, bias is not None)
        layer.qweight.copy_(pack_bits(qt.q, qt.spec.bits, -qt.spec.qmin))
        layer.scales.copy_(qt.scale.half())
        if not qt.spec.symmetric:
            layer.zeros.copy_(qt.zero.half())
        if bias is not None:
            layer.bias.data.copy_(bias.detach().float())
        return layer

    def quantized(self) -> QuantizedTensor:
        count = self.in_features * self.out_features
        q = unpack_bits(self.qweight, self.spec.bits, count, -self.spec.qmin)
        zero = self.zeros.float() if not self.spec.symmetric else torch.zeros_like(
            self.scales, dtype=torch.float32)
        return QuantizedTensor(q.view(self.out_features, self.in_features),
                               self.scales.float(), zero, self.spec)

    def dequantized_weight(self) -> torch.Tensor:
        if self._weight is None:
            self._weight = dequantize(self.quantized())
        return self._weight

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._weight = None  # new integers: rebuild the dequantized weight on next use
        super()._load_from_state_dict(*args, **kwargs)

    @property
    def weight(self) -> torch.Tensor:
        return self.dequantized_weight()

    is_packed = True  # LoadedModel.weight_bytes counts `nbytes` for such modules

    @property
    def nbytes(self) -> int:
        """Packed integers plus fp16 scales and zero points (the bias is a parameter)."""
        return self.spec.nbytes(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized_weight().to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, {self.spec.label}"

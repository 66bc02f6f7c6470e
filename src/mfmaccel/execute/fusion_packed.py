"""`PackedLinear`: a float linear whose weight is also held in oneDNN's blocked layout, packed
once, for inputs of two rows or more; one row keeps the plain matrix-vector product.

Why: a GEMM library reorders (packs) its weight operand into cache-sized panels on every call;
for a prompt of a few hundred tokens against a weight of a few MB, that pass costs a good share
of the product. Packing once at load time, as Inductor's frozen CPU graphs and IPEX do, fuses
that step away; the bias add rides in the same oneDNN call. On smollm2-135m's 512-token
prefill, fused blocks with packed weights ran 1.43x the unfused model and 1.13x the same
blocks without packing (`benchmarks/fusion.py`,
`2026-12-07-fusion-smollm2-135m-r5-at-65feed1.json`); one row takes `FewRowsLinear`'s
slab-per-thread product, as every loaded model's decode does. The
plain weight stays the parameter, so state dicts, quantization and the hardware model read
true values; the packed copy is a non-persistent buffer (twice the float weight bytes in
memory), rebuilt by `repack()` after the weight changes.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional

from mfmaccel.execute.fusion_linear import is_float_linear
from mfmaccel.runtime.fewrows import one_row_product, row_count

PACK_ROWS = 128  # the row count oneDNN is told to expect when it picks the blocked layout


def packing_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn,
                                                           "_reorder_linear_weight")


class PackedLinear(nn.Linear):
    """`nn.Linear` with the same parameters; several rows multiply against the packed weight."""

    packed: torch.Tensor

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> PackedLinear:
        """Shares `linear`'s weight and bias; only the packed copy is new."""
        return cls.holding(linear.weight, linear.bias)

    @classmethod
    def holding(cls, weight: nn.Parameter, bias: nn.Parameter | None) -> PackedLinear:
        layer = cls(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
        layer.weight, layer.bias = weight, bias
        layer.repack()
        return layer

    def __deepcopy__(self, memo: dict) -> PackedLinear:
        """A copy packed anew: oneDNN's packed tensor has no storage `deepcopy` could read
        (`decode.drafts.int8_copy` deep-copies a target)."""
        twin = PackedLinear.holding(copy.deepcopy(self.weight, memo),
                                    copy.deepcopy(self.bias, memo))
        twin.train(self.training)
        memo[id(self)] = twin
        return twin

    def repack(self) -> None:
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), PACK_ROWS)
        self.register_buffer("packed", packed, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One row: `one_row_product` (a slab of the weight per thread). Two or more float rows
        at inference: the packed product. Otherwise, and under torch.compile (Inductor packs
        weights itself and cannot read oneDNN's tensor), the plain one."""
        if row_count(x) == 1:
            return one_row_product(x, self.weight, self.bias)
        if x.dtype != torch.float32 or torch.compiler.is_compiling() or (
                torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return functional.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def prepacked(layer: nn.Module) -> nn.Module:
    """`layer` as a `PackedLinear` when it is a float fp32 linear and oneDNN is here; as it was
    otherwise (packed integer layers have their own kernel)."""
    if not is_float_linear(layer) or layer.weight.dtype != torch.float32 or not packing_available():
        return layer
    return PackedLinear.from_linear(layer)

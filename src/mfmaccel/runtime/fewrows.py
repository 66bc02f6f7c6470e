"""A drop-in `nn.Linear` that multiplies in the weight's orientation when few rows come in.

Why: decode with a batch, and the verify pass of speculative decoding, feed each linear layer
2 to 32 rows. On these CPUs MKL's `x @ W^T` for such inputs runs up to three times slower than
the same product computed as `(W @ x^T)^T` (`benchmarks/linear_rows.py` measures both on the
layer shapes of a real model). One row and long prompts keep the stock path.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

FEW_ROWS = 32  # up to here the weight-stationary product wins on every shape measured


def row_count(x: torch.Tensor) -> int:
    """How many rows (vectors of the last dimension) `x` holds."""
    return x.numel() // x.shape[-1] if x.shape[-1] else 0


def few_rows_linear(x: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, computed as `(weight @ x^T)^T` when x has 2..FEW_ROWS rows."""
    rows = row_count(x)
    if not 1 < rows <= FEW_ROWS:
        return functional.linear(x, weight, bias)
    flat = torch.mm(weight, x.reshape(rows, x.shape[-1]).t()).t()
    if bias is not None:
        flat = flat + bias
    return flat.contiguous().reshape(*x.shape[:-1], weight.shape[0])


class FewRowsLinear(nn.Linear):
    """`nn.Linear` with the same parameters and results; only the product's orientation differs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return few_rows_linear(x, self.weight, self.bias)


def use_few_rows_linear(module: nn.Module) -> nn.Module:
    """Switch every plain `nn.Linear` inside `module` to `FewRowsLinear`, in place; returns it.

    Only the class changes, so weights, hooks and state-dict keys stay as they were; subclasses
    (quantized layers) keep their own forward.
    """
    for child in module.modules():
        if type(child) is nn.Linear:
            child.__class__ = FewRowsLinear
    return module

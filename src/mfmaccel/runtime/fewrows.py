"""A drop-in `nn.Linear` that picks the product's form by how many rows come in.

Why: on these CPUs the stock `x @ W^T` leaves bandwidth unused when few rows come in, and
decode is nothing but such products.
- One row (a decode step): MKL's matrix-vector product streams the weight on one core. The
  same product as a batched product over the weight's rows cut in one slab per thread
  (`torch.bmm`, which gives each thread its own slab) streamed qwen2.5-coder-0.5b's weights at
  23.7 GB/s against 14.1, and its batch-1 decode ran 1.53x faster
  (`benchmarks/linear_rows.py`, `2026-12-07-linear-rows-qwen2.5-coder-0.5b-at-86b6fe4.json`).
- 2 to 32 rows (batched decode, the verify pass of speculative decoding): MKL's `x @ W^T` runs
  up to three times slower than the same product computed as `(W @ x^T)^T`.
Weights under 1 MiB and long prompts keep the stock path. Every form computes the same dot
products; only the order of the sums inside the library differs (differences of about 1e-6 of
the largest output).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

FEW_ROWS = 32  # up to here the weight-stationary product wins on every shape measured
SLAB_MIN_BYTES = 1 << 20  # smaller weights: the stock product (the split's overhead wins there)


def row_count(x: torch.Tensor) -> int:
    """How many rows (vectors of the last dimension) `x` holds."""
    return x.numel() // x.shape[-1] if x.shape[-1] else 0


def slab_count(weight: torch.Tensor) -> int:
    """How many row slabs a one-row product splits `weight` into: one per thread where the
    weight is large enough and its rows divide evenly (a view, no copy), else 1 (the stock
    product)."""
    threads = torch.get_num_threads()
    if threads < 2 or not weight.is_contiguous() or weight.shape[0] % threads or \
            weight.numel() * weight.element_size() < SLAB_MIN_BYTES:
        return 1
    return threads


def one_row_product(x: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear` of one row as a batched product over `slab_count` slabs of the weight."""
    slabs = slab_count(weight)
    if slabs == 1:
        return functional.linear(x, weight, bias)
    # a (K, 1) column with the row's stride (1, K): MKL's batched kernel takes this layout,
    # while the (1, 1) strides of a reshape send bmm to a loop 4x slower
    column = x.reshape(1, x.shape[-1]).t().unsqueeze(0).expand(slabs, -1, -1)
    out = torch.bmm(weight.view(slabs, -1, weight.shape[1]), column).reshape(
        *x.shape[:-1], weight.shape[0])
    return out if bias is None else out.add_(bias)


def few_rows_linear(x: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`: one row as `one_row_product`, 2..FEW_ROWS rows as
    `(weight @ x^T)^T`, more rows as it is."""
    rows = row_count(x)
    if rows == 1:
        return one_row_product(x, weight, bias)
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

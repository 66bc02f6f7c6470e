"""`QuantLinear`: a linear layer whose weight lives as packed b-bit integers plus fp16 scales
(and zero points); its `nbytes` is the true storage every report quotes.

It computes with the dequantized weight, built once on first use, except where a C++ kernel
serves the spec: symmetric per-channel int8 (`int8-c-sym`, `csrc/int8_linear.cpp`) and 4-bit
grids whose rows split into steps of 64 (`csrc/int4_linear.cpp`, on CPUs with AVX-512). There
inputs of up to `FEW_ROWS` tokens (decode, batched decode, speculative verification) go through
the kernel, which reads the packed integers (a quarter or an eighth of the bytes of an fp32
weight) and computes each row the same way whatever the row count, and longer inputs (prefill)
dequantize on the fly a block of about `PREFILL_BLOCK_BYTES` of weight rows at a time,
multiplied while it sits in cache, so the layer never holds an fp32 copy and a prefill never
writes and rereads a whole fp32 weight. With int8 activations
switched on (`set_activations`, see `runtime.activation`) such a layer computes W8A8: int8
inputs, int32 accumulation, one rescale."""

from __future__ import annotations

import torch
from torch import nn

from mfmaccel.errors import UserInputError
from mfmaccel.runtime.activation import (
    check_act_mode,
    int8_matmul,
    per_token_scale,
    quantize_activations,
)
from mfmaccel.runtime.fewrows import FEW_ROWS, few_rows_linear, row_count
from mfmaccel.runtime.grid import QuantizedTensor, QuantSpec, dequantize, expand
from mfmaccel.runtime.kernels import KERNELS, int4_kernel, int8_kernel
from mfmaccel.runtime.pack import pack_bits, unpack_bits

PREFILL_BLOCK_BYTES = 2 << 20  # fp32 weight rows dequantized at a time for long inputs


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
        self._int8_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self._int4_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.activations: str | None = None  # "token" / "tensor": W8A8, see set_activations

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
        return QuantizedTensor(q.view(self.out_features, self.in_features),
                               self.scales.float(), self._zero_points(), self.spec)

    def _zero_points(self) -> torch.Tensor:
        """fp32 (out, groups) zero points; a symmetric grid has none stored, so zeros."""
        if self.spec.symmetric:
            return torch.zeros_like(self.scales, dtype=torch.float32)
        return self.zeros.float()

    def quantized_rows(self, ids: torch.Tensor) -> QuantizedTensor:
        """`quantized()` of rows `ids` alone: when every row starts on a byte boundary of the
        packed stream (in_features x bits a multiple of 8), only those rows are unpacked."""
        row_bytes, spare_bits = divmod(self.in_features * self.spec.bits, 8)
        if spare_bits:
            whole = self.quantized()
            return QuantizedTensor(whole.q[ids], whole.scale[ids], whole.zero[ids], self.spec)
        packed = self.qweight.view(self.out_features, row_bytes)[ids].flatten()
        q = unpack_bits(packed, self.spec.bits, len(ids) * self.in_features, -self.spec.qmin)
        return QuantizedTensor(q.view(len(ids), self.in_features), self.scales[ids].float(),
                               self._zero_points()[ids], self.spec)

    def dequantized_weight(self) -> torch.Tensor:
        if self._weight is not None:
            return self._weight
        if self.spec_has_kernel:  # never cached: from the int8 rows the kernel already holds
            return self._int8_rows_dequantized(slice(None))
        if self.uses_int4_kernel:  # never cached: the kernel reads the packed nibbles
            return self._int4_rows_dequantized(slice(None))
        if self.spec_has_int4_kernel:  # the same values, without unpacking bit by bit
            self._weight = self._int4_rows_dequantized(slice(None))
            return self._weight
        self._weight = dequantize(self.quantized())
        return self._weight

    @property
    def spec_has_kernel(self) -> bool:
        return self.spec.bits == 8 and self.spec.symmetric and self.spec.group_size is None

    @property
    def uses_int8_kernel(self) -> bool:
        return self.spec_has_kernel and KERNELS.enabled and int8_kernel() is not None

    @property
    def spec_has_int4_kernel(self) -> bool:
        """4 bits, rows that split into steps of 64 weights, and groups the steps respect."""
        group = self.spec.group_size or self.in_features
        return self.spec.bits == 4 and self.in_features % 64 == 0 and \
            self.in_features % group == 0 and (group == 32 or group % 64 == 0)

    @property
    def uses_int4_kernel(self) -> bool:
        return self.spec_has_int4_kernel and KERNELS.enabled and int4_kernel() is not None

    def _int8_rows_dequantized(self, rows: slice) -> torch.Tensor:
        """fp32 weight rows from the unpacked int8 ones (bit for bit the grid's dequantize)."""
        weight, scale = self._int8()
        return weight[rows].float() * scale[rows, None]

    def _int8(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 weight (out, in), fp32 row scales), unpacked once."""
        if self._int8_cache is None:
            qt = self.quantized()
            self._int8_cache = (qt.q.to(torch.int8).contiguous(), qt.scale[:, 0].contiguous())
        return self._int8_cache

    def _int4(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(packed nibbles as (out, in / 2) bytes: a view of `qweight`, no copy; fp32 scales;
        fp32 shifts, the zero point less qmin, so a weight is (nibble - shift) * scale)."""
        if self._int4_cache is None:
            packed = self.qweight.view(self.out_features, self.in_features // 2)
            self._int4_cache = (packed, self.scales.float().contiguous(),
                                (self._zero_points() - self.spec.qmin).contiguous())
        return self._int4_cache

    def _int4_rows_dequantized(self, rows: slice | torch.Tensor) -> torch.Tensor:
        """fp32 weight rows (a slice or 1-D row ids) from the packed nibbles, bit for bit the
        grid's dequantize."""
        packed, scale, shift = self._int4()
        block = packed[rows]
        nibbles = torch.stack([block >> 4, block & 15], dim=-1).reshape(block.shape[0], -1)
        return (nibbles.float() - expand(shift[rows], self.spec, self.in_features)) * \
            expand(scale[rows], self.spec, self.in_features)

    def set_activations(self, mode: str, scale: float | None = None) -> None:
        """Quantize this layer's inputs to int8 from now on: per token (dynamic), or per tensor
        with a calibrated `scale` (stored as the `act_scale` buffer, so it saves and reloads)."""
        check_act_mode(mode)
        if not self.spec_has_kernel:
            raise UserInputError(f"int8 activations need int8-c-sym weights, not "
                                 f"{self.spec.label}; quantize with --uniform int8-c-sym")
        self.activations = mode
        if mode == "tensor":  # stored as fp16 like every scale, so round it now
            self.register_buffer("act_scale", torch.tensor(float(scale or 1.0)).half().float())

    def _w8a8(self, x: torch.Tensor) -> torch.Tensor:
        weight, scale = self._int8()
        flat = x.reshape(-1, self.in_features).float()
        x_scale = self.act_scale if self.activations == "tensor" else per_token_scale(flat)
        acc = int8_matmul(quantize_activations(flat, x_scale), weight)
        out = acc.float() * (x_scale * scale)
        if self.bias is not None:
            out = out + self.bias.float()
        return out.view(*x.shape[:-1], self.out_features).to(x.dtype)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._weight = None  # new integers: rebuild the dequantized weight on next use
        self._int8_cache = None
        self._int4_cache = None
        super()._load_from_state_dict(*args, **kwargs)

    @property
    def weight(self) -> torch.Tensor:
        return self.dequantized_weight()

    is_packed = True  # LoadedModel.weight_bytes counts `nbytes` for such modules
    is_lookup = False  # QuantEmbedding: takes token ids, so no int8 activations

    @property
    def nbytes(self) -> int:
        """Packed integers plus fp16 scales and zero points (the bias is a parameter)."""
        return self.spec.nbytes(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activations is not None:
            return self._w8a8(x)
        rows = row_count(x)
        if self.uses_int8_kernel and x.dtype == torch.float32 and 0 < rows <= FEW_ROWS:
            weight, scale = self._int8()
            bias = None if self.bias is None else self.bias.float()
            out = int8_kernel().int8_linear(x.reshape(rows, -1), weight, scale, bias)
            return out.view(*x.shape[:-1], self.out_features)
        if self.uses_int4_kernel and x.dtype == torch.float32 and 0 < rows <= FEW_ROWS:
            packed, scale, shift = self._int4()
            bias = None if self.bias is None else self.bias.float()
            group = self.spec.group_size or self.in_features
            out = int4_kernel().int4_linear(x.reshape(rows, -1), packed, scale, shift, group, bias)
            return out.view(*x.shape[:-1], self.out_features)
        if KERNELS.enabled and x.dtype == torch.float32 and rows > FEW_ROWS:
            if self.spec_has_kernel:
                return self._by_blocks(x, self._int8_rows_dequantized)
            if self.uses_int4_kernel:
                return self._by_blocks(x, self._int4_rows_dequantized)
        return few_rows_linear(x, self.dequantized_weight().to(x.dtype), self.bias)

    def _by_blocks(self, x: torch.Tensor, dequantized_rows) -> torch.Tensor:
        """A long input against the packed rows, dequantizing a block of rows at a time: the
        whole weight in fp32 is four (int8) or eight (4-bit) times the packed bytes and falls
        out of cache before the product reads it back (`benchmarks/int8_decode.py` times a
        prefill both ways)."""
        flat = x.reshape(-1, self.in_features)
        out = flat.new_empty(flat.shape[0], self.out_features)
        step = max(16, PREFILL_BLOCK_BYTES // (4 * self.in_features))
        for start in range(0, self.out_features, step):
            block = slice(start, start + step)
            out[:, block] = flat @ dequantized_rows(block).T
        if self.bias is not None:
            out += self.bias.float()
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        acts = f", a8-{self.activations}" if self.activations else ""
        return f"{self.in_features} -> {self.out_features}, {self.spec.label}{acts}"


def matmul_layers(module: nn.Module) -> dict[str, QuantLinear]:
    """The packed layers of `module` that multiply inputs (those int8 activations apply to)."""
    return {name: m for name, m in module.named_modules()
            if isinstance(m, QuantLinear) and not m.is_lookup}

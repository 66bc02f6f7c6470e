"""Packed integers as GGUF blocks, built byte by byte.

The `gguf` package's quantizers round float data onto their own grid; a model mfmaccel already
quantized has its integers and scales, and writing those as they are is what keeps llama.cpp's
weights equal to ours. Every GGUF type below holds blocks of 32 weights along a row with one
fp16 scale (`d`) and, for the `_1` types, one fp16 offset (`m`); a plan maps onto a type only
when its groups are whole multiples of 32 (or one per row), so each block sits in one group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from gguf import GGMLQuantizationType as GGML

from mfmaccel.runtime.grid import QuantizedTensor, QuantSpec, expand

BLOCK = 32


@dataclass(frozen=True)
class Encoded:
    """One tensor's bytes, (rows, bytes per row), in GGUF type `kind`; `exact` says whether
    gguf's dequantization of them equals our dequantized weight bit for bit."""

    data: np.ndarray
    kind: GGML
    exact: bool


def gguf_type(spec: QuantSpec, in_features: int) -> GGML | None:
    """The block type a spec is written as, or None (the weight goes out dequantized, F16)."""
    group = spec.group_size or in_features
    if in_features % BLOCK or group % BLOCK:
        return None
    table = {(8, True): GGML.Q8_0, (4, True): GGML.Q4_0, (4, False): GGML.Q4_1,
             (5, True): GGML.Q5_0, (5, False): GGML.Q5_1}
    return table.get((spec.bits, spec.symmetric))


def encode(qt: QuantizedTensor) -> Encoded | None:
    """`qt` as GGUF blocks, or None where no block type holds its spec."""
    out, inp = qt.shape
    kind = gguf_type(qt.spec, inp)
    if kind is None:
        return None
    q = qt.q.reshape(out, inp // BLOCK, BLOCK).numpy().astype(np.int32)
    d = _per_block(qt.scale, qt.spec, inp)
    if qt.spec.symmetric:
        data = _SYMMETRIC[kind](q - qt.spec.qmin, d)
        return Encoded(data.reshape(out, -1), kind, exact=True)
    # (q - zero) * scale = d * q + m, with m = -zero * scale rounded to fp16: not exact
    m = (-_per_block(qt.zero, qt.spec, inp).astype(np.float32) * d.astype(np.float32))
    data = _ASYMMETRIC[kind](q, d, m.astype(np.float16))
    return Encoded(data.reshape(out, -1), kind, exact=False)


def _per_block(per_group: torch.Tensor, spec: QuantSpec, in_features: int) -> np.ndarray:
    """(out, groups) -> (out, blocks) fp16: each block of 32 takes its group's value."""
    columns = expand(per_group.float(), spec, in_features)
    if columns.shape[1] == 1:
        columns = columns.expand(-1, in_features)
    return columns[:, ::BLOCK].half().numpy()


def _halves(values: np.ndarray) -> np.ndarray:
    """fp16 (out, blocks) as its 2 bytes each, little-endian: (out, blocks, 2)."""
    return values.astype("<f2")[..., None].view(np.uint8)


def _nibbles(unsigned: np.ndarray) -> np.ndarray:
    """ggml's 4-bit order: element i in the low nibble of byte i, i + 16 in its high nibble."""
    low = unsigned & 15
    return (low[..., :16] | (low[..., 16:] << 4)).astype(np.uint8)


def _high_bits(unsigned: np.ndarray) -> np.ndarray:
    """Bit 4 of element i as bit i of a little-endian uint32 (the `qh` of Q5 blocks)."""
    bits = ((unsigned >> 4) & 1).astype(np.uint32) << np.arange(BLOCK, dtype=np.uint32)
    return bits.sum(-1, dtype=np.uint32).astype("<u4")[..., None].view(np.uint8)


def _q8_0(unsigned: np.ndarray, d: np.ndarray) -> np.ndarray:
    signed = (unsigned - 128).astype(np.int8).view(np.uint8)
    return np.concatenate([_halves(d), signed], axis=-1)


def _q4_0(unsigned: np.ndarray, d: np.ndarray) -> np.ndarray:
    return np.concatenate([_halves(d), _nibbles(unsigned)], axis=-1)


def _q5_0(unsigned: np.ndarray, d: np.ndarray) -> np.ndarray:
    return np.concatenate([_halves(d), _high_bits(unsigned), _nibbles(unsigned)], axis=-1)


def _q4_1(unsigned: np.ndarray, d: np.ndarray, m: np.ndarray) -> np.ndarray:
    return np.concatenate([_halves(d), _halves(m), _nibbles(unsigned)], axis=-1)


def _q5_1(unsigned: np.ndarray, d: np.ndarray, m: np.ndarray) -> np.ndarray:
    return np.concatenate([_halves(d), _halves(m), _high_bits(unsigned), _nibbles(unsigned)],
                          axis=-1)


# the symmetric types store q - qmin (ggml subtracts 2**(bits-1) back); Q8_0 stores q itself
_SYMMETRIC = {GGML.Q8_0: _q8_0, GGML.Q4_0: _q4_0, GGML.Q5_0: _q5_0}
_ASYMMETRIC = {GGML.Q4_1: _q4_1, GGML.Q5_1: _q5_1}

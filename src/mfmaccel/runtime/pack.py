"""Packed integer storage: b-bit values laid end to end in a uint8 bitstream (any b in 2..8),
so a 3-bit matrix really takes 3/8 of a byte per weight on disk."""

from __future__ import annotations

import numpy as np
import torch


def pack_bits(values: torch.Tensor, bits: int, offset: int = 0) -> torch.Tensor:
    """Flattened `values + offset` (each in [0, 2**bits)) as a uint8 tensor of ceil(n*bits/8)."""
    unsigned = values.flatten().to(torch.int32) + offset
    if unsigned.numel():
        low, high = torch.aminmax(unsigned)
        if low < 0 or high >= 2**bits:
            raise ValueError(f"values do not fit in {bits} bits after offset {offset}")
    if bits == 8:
        return unsigned.to(torch.uint8)
    unsigned = unsigned.numpy()
    planes = np.unpackbits(unsigned.astype(np.uint8)[:, None], axis=1)[:, 8 - bits:]
    return torch.from_numpy(np.packbits(planes.reshape(-1)))


def unpack_bits(packed: torch.Tensor, bits: int, count: int, offset: int = 0) -> torch.Tensor:
    """The `count` values `pack_bits` stored, as int16."""
    raw = packed.numpy().astype(np.uint8)
    if bits == 8:
        values = raw[:count].astype(np.int16)
    else:
        stream = np.unpackbits(raw)[: count * bits].reshape(count, bits)
        weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.int16)
        values = stream.astype(np.int16) @ weights
    return torch.from_numpy(values.astype(np.int16) - offset)


def packed_size(count: int, bits: int) -> int:
    return -(-count * bits // 8)

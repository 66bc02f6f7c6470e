"""Packing integers into the flat bit vectors the generated ports use, and back (testbenches)."""

from __future__ import annotations

import json
import os

from mfmaccel.hw.rtl.config import RtlConfig

VECTORS = int(os.environ.get("RTL_VECTORS", "10000"))
SEED = int(os.environ.get("RTL_SEED", "0"))


def pack(values: list[int], bits: int) -> int:
    """Lane i in bits [i*bits, (i+1)*bits), two's complement."""
    mask = (1 << bits) - 1
    return sum((v & mask) << (i * bits) for i, v in enumerate(values))


def unpack_signed(word: int, count: int, bits: int) -> list[int]:
    mask, sign = (1 << bits) - 1, 1 << (bits - 1)
    values = [(word >> (i * bits)) & mask for i in range(count)]
    return [v - (1 << bits) if v & sign else v for v in values]


def unpack_unsigned(word: int, count: int, bits: int) -> list[int]:
    mask = (1 << bits) - 1
    return [(word >> (i * bits)) & mask for i in range(count)]


def config_from_env() -> RtlConfig:
    """The configuration the unit under test was generated from (`verify.simulate` sets it)."""
    return RtlConfig(**json.loads(os.environ.get("RTL_CONFIG", "{}")))

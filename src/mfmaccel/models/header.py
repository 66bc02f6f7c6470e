"""Read and validate a safetensors header without touching the tensor data.

Why: the safetensors reader and transformers fail on a damaged header with a stack trace from
deep inside Rust or a memory map. Checking here, in the order the format defines (8-byte length,
JSON object, one entry per tensor with dtype, shape and data offsets that tile the data exactly),
turns each fault into one line naming the file and the tensor.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from mfmaccel.errors import UserInputError

# Bytes per element of every dtype torch can read from a safetensors file.
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E4M3FNUZ": 1, "F8_E5M2": 1, "F8_E5M2FNUZ": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}
METADATA_KEY = "__metadata__"
MAX_HEADER_BYTES = 100 << 20  # the reference reader's limit


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header describes it (offsets relative to the data section)."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def read_safetensors_header(path: Path) -> dict[str, TensorEntry]:
    """Every tensor of `path` by name; raises `UserInputError` on any inconsistency."""
    size = path.stat().st_size
    raw, header_len = _read_raw_header(path, size)
    entries = {name: _entry(path, name, info) for name, info in raw.items()
               if name != METADATA_KEY}
    _check_metadata(path, raw.get(METADATA_KEY))
    _check_tiling(path, entries, start=8 + header_len, size=size)
    return entries


def _read_raw_header(path: Path, size: int) -> tuple[dict, int]:
    with path.open("rb") as handle:
        raw_len = handle.read(8)
        if len(raw_len) < 8:
            raise UserInputError(f"{path} is not a safetensors file (too short); re-copy it")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > size - 8:
            raise UserInputError(f"{path} is truncated (header runs past the end); re-copy it")
        if header_len > MAX_HEADER_BYTES:
            raise UserInputError(f"{path} has a {header_len}-byte header (over 100 MB); "
                                 "re-save the checkpoint")
        try:
            header = json.loads(handle.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserInputError(
                f"{path} has a corrupt safetensors header ({err}); re-copy it"
            ) from None
    if not isinstance(header, dict):
        raise UserInputError(f"{path}: the safetensors header is a {type(header).__name__}, "
                             "not an object of tensors; re-save the checkpoint")
    return header, header_len


def _bad(path: Path, name: str, what: str) -> UserInputError:
    return UserInputError(f"{path}: tensor '{name}' {what} in the safetensors header; "
                          "re-copy or re-save the checkpoint")


def _entry(path: Path, name: str, info: object) -> TensorEntry:
    if not isinstance(info, dict):
        raise _bad(path, name, f"is a {type(info).__name__}, not an object")
    for field in ("dtype", "shape", "data_offsets"):
        if field not in info:
            raise _bad(path, name, f"has no '{field}'")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise _bad(path, name, f"has unknown dtype {dtype!r} (known: {', '.join(DTYPE_BYTES)})")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise _bad(path, name, f"has shape {shape!r}, not a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_is_count(o) for o in offsets) or offsets[0] > offsets[1]):
        raise _bad(path, name, f"has data_offsets {offsets!r}, not [begin, end] with "
                               "0 <= begin <= end")
    needed = math.prod(shape) * DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != needed:
        raise _bad(path, name, f"spans {offsets[1] - offsets[0]} bytes but {dtype} x "
                               f"{tuple(shape)} needs {needed}")
    return TensorEntry(dtype=dtype, shape=tuple(shape), begin=offsets[0], end=offsets[1])


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_metadata(path: Path, metadata: object) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict) or not all(
            isinstance(v, str) for v in metadata.values()):
        raise UserInputError(f"{path}: '{METADATA_KEY}' in the safetensors header must map "
                             "names to strings; re-save the checkpoint")


def _check_tiling(path: Path, entries: dict[str, TensorEntry], *, start: int, size: int) -> None:
    """Tensors, in offset order, cover the data section exactly: no overlap, no gap, no tail
    missing (a truncated file) and nothing after it."""
    position, previous = 0, None
    for name, entry in sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin < position:
            raise UserInputError(f"{path}: tensors '{previous}' and '{name}' overlap in the "
                                 "safetensors data; re-copy or re-save the checkpoint")
        if entry.begin > position:
            raise UserInputError(f"{path}: {entry.begin - position} bytes before tensor "
                                 f"'{name}' belong to no tensor; re-copy or re-save the "
                                 "checkpoint")
        position, previous = entry.end, name
    if start + position > size:
        raise UserInputError(f"{path} is truncated: {size} bytes, its header needs "
                             f"{start + position}; re-copy it")
    if start + position < size:
        raise UserInputError(f"{path} has {size - start - position} bytes after its last "
                             "tensor; re-copy or re-save the checkpoint")

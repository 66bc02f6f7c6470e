"""Cheap integrity checks on weight files, so a truncated download fails with one clear line
instead of a deep stack trace from a memory map."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from mfmaccel.errors import UserInputError

GGUF_MAGIC = b"GGUF"


def check_safetensors_file(path: Path) -> None:
    """Header parses and the file is exactly as long as the header says."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        raw_len = handle.read(8)
        if len(raw_len) < 8:
            raise UserInputError(f"{path} is not a safetensors file (too short); re-copy it")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > size - 8:
            raise UserInputError(f"{path} is truncated (header runs past the end); re-copy it")
        try:
            header = json.loads(handle.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserInputError(
                f"{path} has a corrupt safetensors header ({err}); re-copy it"
            ) from None
    ends = [info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"]
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        raise UserInputError(
            f"{path} is truncated: {size} bytes, its header needs {expected}; re-copy it"
        )


def check_gguf_file(path: Path, expected_size: int | None = None) -> None:
    """GGUF magic, optional exact size, and every tensor's data inside the file."""
    if not path.is_file():
        raise UserInputError(f"GGUF file {path} does not exist; check the path")
    size = path.stat().st_size
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise UserInputError(f"{path} is not a GGUF file (magic {magic!r}); pass a .gguf model")
    if expected_size is not None and size != expected_size:
        raise UserInputError(
            f"{path} is {size} bytes, expected {expected_size}; reinstall the model package"
        )
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as err:  # the reader raises many types on a damaged file
        raise UserInputError(
            f"{path} is a corrupt or truncated GGUF file ({err}); re-copy it"
        ) from None
    end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise UserInputError(f"{path} is truncated: tensor data needs {end} bytes, has {size}")


def check_hf_folder(folder: Path) -> None:
    """A Hugging Face model folder: config.json that parses, and sound safetensors files."""
    config = folder / "config.json"
    if not config.is_file():
        raise UserInputError(
            f"{folder} has no config.json; pass a Hugging Face model folder, a .gguf file "
            "or a built-in name (mfmaccel models)"
        )
    try:
        json.loads(config.read_text())
    except json.JSONDecodeError as err:
        raise UserInputError(f"{config} is not valid JSON ({err}); fix or re-save it") from None
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise UserInputError(
            f"{folder} has no .safetensors weights (pickled .bin files are not loaded for "
            "safety); convert them with save_pretrained(safe_serialization=True)"
        )
    for weight_file in weights:
        check_safetensors_file(weight_file)

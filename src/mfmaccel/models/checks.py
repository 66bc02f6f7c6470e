"""Cheap integrity checks on weight files, so a truncated download fails with one clear line
instead of a deep stack trace from a memory map."""

from __future__ import annotations

import json
from pathlib import Path

from mfmaccel.errors import UserInputError
from mfmaccel.models.header import TensorEntry, read_safetensors_header

GGUF_MAGIC = b"GGUF"
SINGLE_FILE = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"


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


def check_hf_folder(folder: Path) -> dict[str, TensorEntry]:
    """A Hugging Face model folder: config.json holding a JSON object, and sound safetensors
    files; returns the tensors of the weights transformers will load (the shards the index
    names, else `model.safetensors`)."""
    config = folder / "config.json"
    if not config.is_file():
        raise UserInputError(
            f"{folder} has no config.json; pass a Hugging Face model folder, a .gguf file "
            "or a built-in name (mfmaccel models)"
        )
    try:
        parsed = json.loads(config.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"{config} is not valid JSON ({err}); fix or re-save it") from None
    if not isinstance(parsed, dict):
        raise UserInputError(f"{config} holds a {type(parsed).__name__}, not a JSON object; "
                             "fix or re-save it")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise UserInputError(
            f"{folder} has no .safetensors weights (pickled .bin files are not loaded for "
            "safety); convert them with save_pretrained(safe_serialization=True)"
        )
    headers = {weight_file.name: read_safetensors_header(weight_file) for weight_file in weights}
    return _model_tensors(folder, headers)


def _model_tensors(folder: Path, headers: dict[str, dict[str, TensorEntry]]
                   ) -> dict[str, TensorEntry]:
    """The union of the files that make up the model, each tensor in exactly one of them."""
    index = folder / SHARD_INDEX
    if index.is_file():
        names = _shard_names(index)
        missing = sorted(names - set(headers))
        if missing:
            raise UserInputError(f"{index} names {len(missing)} missing shard(s) "
                                 f"({', '.join(missing[:3])}); re-copy the checkpoint")
    elif SINGLE_FILE in headers:
        names = {SINGLE_FILE}
    else:
        raise UserInputError(f"{folder} has no {SINGLE_FILE} (nor {SHARD_INDEX}); re-save "
                             "it with save_pretrained(safe_serialization=True)")
    tensors: dict[str, TensorEntry] = {}
    for file_name in sorted(names):
        for name, entry in headers[file_name].items():
            if name in tensors:
                raise UserInputError(f"{folder}: tensor '{name}' is stored in two shards; "
                                     "re-save the checkpoint")
            tensors[name] = entry
    return tensors


def _shard_names(index: Path) -> set[str]:
    try:
        weight_map = json.loads(index.read_bytes()).get("weight_map")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        weight_map = None
    if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) for v in weight_map.values()):
        raise UserInputError(f"{index} has no valid weight_map; re-copy the checkpoint")
    return set(weight_map.values())

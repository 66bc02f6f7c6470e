"""`load_model(spec)`: one entry point for built-in names, `tiny-<arch>`, HF folders and GGUF files.

GGUF files are dequantized once (about 20 s for a 135M model, minutes for a 1.5B one) and kept as
a safetensors folder in the cache, so every later load takes seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.fileio import atomic_directory
from mfmaccel.models.checks import check_hf_folder
from mfmaccel.models.hf import (
    classify_config,
    load_builtin,
    load_gguf_path,
    load_hf_folder,
    read_config,
)
from mfmaccel.models.medvlm import (
    MEDVLM_V1,
    default_weights_dir,
    holds_trained_parts,
    load_medvlm,
)
from mfmaccel.models.record import CAUSAL_LM, VLM, LoadedModel
from mfmaccel.models.tiny import TINY_BUILDERS, build_tiny
from mfmaccel.models.zoo import BUILTIN_MODELS
from mfmaccel.runtime.fewrows import use_few_rows_linear
from mfmaccel.runtime.storage import save_quantized

MEDVLM = "medvlm"  # models.medvlm: smollm2-135m plus the parts in weights/medvlm/
# the first medvlm (from-scratch tower, weights/medvlm-v1/): its records stay reproducible
MEDVLM_BASE = "medvlm-base"  # the same model before fine-tuning (random tower, seeded)
MEDVLM_TINY = "medvlm-tiny"  # untrained, tiny Llama and a 64-pixel tower: for tests


def known_model_names() -> list[str]:
    medvlm = [MEDVLM, MEDVLM_BASE, MEDVLM_V1, MEDVLM_TINY]
    return list(BUILTIN_MODELS) + medvlm + [f"tiny-{arch}" for arch in TINY_BUILDERS]


def load_model(spec: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> LoadedModel:
    """Load a model by built-in name, `tiny-<arch>`, HF folder path or `.gguf` path.

    Its linear layers come back as `FewRowsLinear` (same weights and results), which runs batched
    decode and speculative verification faster on CPUs.
    """
    model = _load(spec, dtype, seed)
    use_few_rows_linear(model.module)
    return model


def _load(spec: str, dtype: torch.dtype, seed: int) -> LoadedModel:
    if spec.startswith("tiny-"):
        arch = spec.removeprefix("tiny-")
        if arch not in TINY_BUILDERS:
            raise UserInputError(
                f"unknown tiny architecture '{arch}'; choose one of: "
                + ", ".join(f"tiny-{a}" for a in TINY_BUILDERS)
            )
        return _with_dtype(build_tiny(arch, seed), dtype)
    if spec in BUILTIN_MODELS:
        return load_builtin(BUILTIN_MODELS[spec], dtype)
    if spec == MEDVLM:
        return _with_dtype(load_medvlm(), dtype)
    if spec == MEDVLM_V1:
        model = load_medvlm(default_weights_dir(MEDVLM_V1))
        model.name = MEDVLM_V1
        return _with_dtype(model, dtype)
    if spec in (MEDVLM_BASE, MEDVLM_TINY):
        from mfmaccel.models.medvlm import build_medvlm

        return _with_dtype(build_medvlm(seed, tiny=spec == MEDVLM_TINY), dtype)
    path = Path(spec).expanduser()
    if path.is_dir() and holds_trained_parts(path):
        return _with_dtype(load_medvlm(path), dtype)
    if path.is_dir():
        return load_hf_folder(path, name=path.name, source=str(path), dtype=dtype)
    if path.is_file():
        return load_gguf_path(path, dtype)
    if path.suffix or os.sep in spec:
        raise UserInputError(f"model path {spec} does not exist; check the path")
    raise UserInputError(
        f"unknown model '{spec}'; use a built-in name ({', '.join(known_model_names())}), "
        "a Hugging Face folder or a .gguf file"
    )


def _with_dtype(model: LoadedModel, dtype: torch.dtype) -> LoadedModel:
    model.module.to(dtype)
    return model


def model_kind(spec: str) -> str:
    """The kind of model `spec` names, found without loading weights (to fail fast)."""
    if spec.startswith("tiny-") and spec.removeprefix("tiny-") in TINY_BUILDERS:
        return TINY_BUILDERS[spec.removeprefix("tiny-")][0]
    if spec in BUILTIN_MODELS:
        return BUILTIN_MODELS[spec].kind
    if spec in (MEDVLM, MEDVLM_BASE, MEDVLM_V1, MEDVLM_TINY):
        return VLM
    path = Path(spec).expanduser()
    if path.is_dir() and holds_trained_parts(path):
        return VLM
    if path.is_dir() and (path / "config.json").is_file():
        check_hf_folder(path)
        return classify_config(read_config(path), path)
    if path.is_file():
        return CAUSAL_LM  # GGUF files hold language models
    load_model(spec)  # raises the right error for anything else
    raise AssertionError("unreachable")


def save_model(model: LoadedModel, folder: Path) -> Path:
    """Save a model as a loadable HF folder (safetensors), atomically; a quantized model keeps
    its packed integers (see `runtime.storage`)."""
    if "quantization" in model.meta:
        return save_quantized(model.module, model.meta["quantization"], folder,
                              preprocessors=(model.processor, model.tokenizer))
    with atomic_directory(folder) as tmp:
        model.module.save_pretrained(tmp, safe_serialization=True)
        for part in (model.processor, model.tokenizer):
            if part is not None:
                part.save_pretrained(tmp)
    return folder

"""`weights/medvlm/`: the small trained parts of medvlm and the manifest that vouches for them.

Files: `vision_tower.safetensors`, `projector.safetensors`, `lora_adapter.safetensors` (fp16:
half the bytes, and the accuracy in the manifest is measured on the model loaded from these
very files), plus `manifest.json` with each file's sha256, the recipe, seed, config, measured
accuracies and wall times. The language model itself is not stored: it is SmolLM2-135M from
its package. The folder's `.mfmaccel-output` marker (see `fileio`) is not a trained part and
not in the manifest: it only lets `mfmaccel finetune --out weights/medvlm` replace the folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mfmaccel.errors import UserInputError
from mfmaccel.fileio import atomic_directory
from mfmaccel.models.lora import apply_lora, lora_config
from mfmaccel.models.record import LoadedModel

MANIFEST = "manifest.json"
PARTS = {
    "vision_tower": "vision_tower.safetensors",
    "projector": "projector.safetensors",
    "lora": "lora_adapter.safetensors",
}
SAVE_DTYPE = torch.float16
FIX = ("run `mfmaccel finetune --out <this folder>` to train them, or `git checkout weights/` "
       "to restore the committed ones")


def tower(module: torch.nn.Module) -> torch.nn.Module:
    return module.model.vision_tower


def projector(module: torch.nn.Module) -> torch.nn.Module:
    return module.model.multi_modal_projector


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_trained_parts(model: LoadedModel, folder: str | Path, manifest: dict[str, Any]) -> Path:
    """Write the trained parts of `model` (from `finetune_model`) and their manifest, atomically."""
    parts = model.meta.get("trained_parts")
    if not parts:
        raise UserInputError(f"{model.name} has no trained parts to save; fine-tune it first")
    folder = Path(folder)
    with atomic_directory(folder) as tmp:
        files = {}
        for part, name in PARTS.items():
            tensors = {k: v.to(SAVE_DTYPE).contiguous() for k, v in parts[part].items()}
            if not tensors:
                continue
            save_file(tensors, str(tmp / name))
            files[name] = {"sha256": sha256_of(tmp / name), "bytes": (tmp / name).stat().st_size}
        full = {**manifest, "files": files, "lora": parts["lora_config"],
                "vision": model.meta["vision"], "tiny": model.meta.get("tiny", False),
                "seed": model.meta["seed"], "dtype": str(SAVE_DTYPE).removeprefix("torch.")}
        (tmp / MANIFEST).write_text(json.dumps(full, indent=2) + "\n")
    return folder


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest, after checking that it and every file it lists are present and intact."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise UserInputError(f"medvlm weights missing: {path} not found; {FIX}")
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        for key in ("vision", "seed", "lora"):
            manifest[key]  # noqa: B018 (presence check)
    except (json.JSONDecodeError, KeyError, TypeError):
        raise UserInputError(f"{path} is not a valid medvlm manifest; {FIX}") from None
    for name, entry in files.items():
        file = folder / name
        if not file.is_file():
            raise UserInputError(f"medvlm weights incomplete: {file} is missing; {FIX}")
        if sha256_of(file) != entry["sha256"]:
            raise UserInputError(f"medvlm weights corrupt: {file} fails its sha256 check; {FIX}")
    return manifest


def apply_trained_parts(model: LoadedModel, folder: str | Path, manifest: dict[str, Any]) -> None:
    """Load the tower and projector, and merge the LoRA adapter into the language model."""
    folder, module = Path(folder), model.module
    model.meta["finetuned"] = True
    dtype = next(module.parameters()).dtype
    for part, target in (("vision_tower", tower(module)), ("projector", projector(module))):
        if PARTS[part] in manifest["files"]:
            state = load_file(str(folder / PARTS[part]))
            target.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True)
    if PARTS["lora"] in manifest["files"]:
        state = {k: v.to(dtype) for k, v in load_file(str(folder / PARTS["lora"])).items()}
        config = lora_config(manifest["lora"]["rank"], manifest["lora"]["alpha"])
        model.module = apply_lora(module, config, state).eval()

"""Whether committed medvlm parts were trained from this very starting point with these
settings, so a fine-tuning run can start from them instead of training again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mfmaccel.models.medvlm import default_weights_dir
from mfmaccel.models.medvlm_parts import MANIFEST, read_manifest
from mfmaccel.models.record import LoadedModel


def matching_committed_parts(
    model: LoadedModel, config, folder: str | Path | None = None
) -> tuple[Path, dict[str, Any]] | None:
    """(folder, manifest) of committed medvlm parts trained from this very starting point (an
    untrained medvlm of the same size, tower and seed) with these settings, else None."""
    folder = Path(folder) if folder is not None else default_weights_dir()
    if "vision" not in model.meta or model.meta.get("finetuned") or not (
            folder / MANIFEST).is_file():
        return None
    manifest = read_manifest(folder)
    # the image size is the model's (compared through `vision`), not a setting of the phases
    ignored = {"base", "image_size"}
    wanted = config.model_dump(exclude=ignored)
    recorded = {k: v for k, v in manifest.get("config", {}).items() if k not in ignored}
    vision = json.loads(json.dumps(model.meta["vision"]))  # tuples -> lists, as stored
    same_start = (manifest["seed"] == model.meta.get("seed") and manifest["vision"] == vision
                  and manifest.get("tiny", False) == model.meta.get("tiny", False))
    return (folder, manifest) if same_start and recorded == wanted else None

"""The vision tower's input resolution: the image is resized to `image_size` pixels, the
position embeddings follow the new patch grid, and a LLaVA's language model gets one image
token per patch of that grid: (image_size / patch)^2 of them, so the resolution sets both the
tower's and the language model's share of the prefill."""

from __future__ import annotations

from mfmaccel.errors import UserInputError
from mfmaccel.execute.tower import (
    TowerGeometry,
    image_tokens,
    reshaped_tower,
    tower_family,
    tower_geometry,
    vision_tower,
    with_tower,
)
from mfmaccel.models.record import VLM, LoadedModel


def check_side(side: int, patch: int, *, knob: str) -> None:
    """Refuse a side that the patch does not divide, or smaller than one patch."""
    if side < patch or side % patch:
        raise UserInputError(f"{knob}={side} must be a multiple of the tower's {patch}-pixel "
                             f"patch, at least {patch} (e.g. {patch * max(1, side // patch)} "
                             f"or {patch * (side // patch + 1)})")


def with_resolution(model: LoadedModel, *, image_size: int) -> LoadedModel:
    """`model` reading its images at `image_size` x `image_size` pixels (weights shared; the
    input model is left as it was)."""
    tower = vision_tower(model)
    tower_family(tower, knob="image_size")
    patch = tower_geometry(model).patch_size
    check_side(image_size, patch, knob="image_size")
    reshaped = reshaped_tower(tower, side=image_size, patch=patch)
    tokens = TowerGeometry(image_size=image_size, patch_size=patch).tokens
    emitted = image_tokens(model, tokens) if model.kind == VLM else tokens
    return with_tower(model, reshaped, side=image_size, tokens=emitted, setting={})

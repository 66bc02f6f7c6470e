"""One point of the execution knobs (`Knobs`), read from and written to JSON, and applied to a
loaded model in a fixed order: the image grid first (resolution, then patch stride), then token
merging inside the tower, then image-token dropping inside the language model, so each knob
sees the tokens the one before it left. What `mfmaccel cooptimize` chooses, `mfmaccel eval
--knobs` and the pipeline's `cooptimize` stage apply."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mfmaccel.errors import UserInputError
from mfmaccel.models.record import LoadedModel
from mfmaccel.records import Record


@dataclasses.dataclass
class Knobs(Record):
    """None (or r=0, keep=1) leaves a knob as the model has it."""

    image_size: int | None = None  # the tower's input side in pixels
    patch: int | None = None  # the patch stride (FlexiViT resize of the patch embedding)
    merge_r: int = 0  # ToMe: tokens merged in each tower block
    drop_layer: int | None = None  # FastV: the last LM layer that sees every image token
    drop_keep: float = 1.0  # FastV: the share of image tokens kept after drop_layer

    @property
    def is_default(self) -> bool:
        return self == Knobs()

    def describe(self) -> str:
        changed = {k: v for k, v in dataclasses.asdict(self).items()
                   if v != getattr(Knobs(), k)}
        return ", ".join(f"{k}={v}" for k, v in changed.items()) or "unchanged"


def apply_knobs(model: LoadedModel, knobs: Knobs) -> LoadedModel:
    """`model` with every knob of `knobs` that differs from its default applied (weights shared
    with `model`, which is left as it was)."""
    from mfmaccel.execute.fastv import with_image_token_dropping
    from mfmaccel.execute.resolution import with_resolution
    from mfmaccel.execute.stride import with_patch_stride
    from mfmaccel.execute.tome import with_token_merging

    if knobs.patch is not None:
        model = with_patch_stride(model, patch=knobs.patch, image_size=knobs.image_size)
    elif knobs.image_size is not None:
        model = with_resolution(model, image_size=knobs.image_size)
    if knobs.merge_r:
        model = with_token_merging(model, r=knobs.merge_r)
    if knobs.drop_layer is not None and knobs.drop_keep < 1.0:
        model = with_image_token_dropping(model, layer=knobs.drop_layer, keep=knobs.drop_keep)
    elif knobs.drop_keep != 1.0:
        raise UserInputError("drop_keep needs drop_layer: the LM layer after which image "
                             "tokens are dropped")
    return model


def knobs_from_dict(raw: dict, where: str) -> Knobs:
    """Knobs from a mapping: unknown keys are refused with the valid ones named."""
    valid = [field.name for field in dataclasses.fields(Knobs)]
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise UserInputError(f"{where}: unknown knob '{unknown[0]}'; valid: {', '.join(valid)}")
    return Knobs(**raw)


def load_knobs(path: Path) -> Knobs:
    """Knobs from a JSON file: a `mfmaccel cooptimize` record (its `chosen` knobs) or the knobs
    alone."""
    if not path.is_file():
        raise UserInputError(f"{path} does not exist; give a `mfmaccel cooptimize` output or a "
                             "JSON file of knobs")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path}: not valid JSON ({error}); give a `mfmaccel cooptimize` "
                             "output") from None
    if isinstance(raw, dict) and isinstance(raw.get("chosen"), dict):
        raw = raw["chosen"]
    if not isinstance(raw, dict):
        raise UserInputError(f"{path}: expected a JSON object of knobs")
    return knobs_from_dict(raw, str(path))


@dataclasses.dataclass(frozen=True)
class Adaptation:
    """What `mfmaccel eval` does to a model once loaded: fuse its blocks (`fuse`), then apply
    `knobs`. A record, not a closure, so a worker process that loads the model by name can
    adapt it the same way (`models.source.ModelSource`)."""

    knobs: Knobs | None = None
    fuse: bool = False

    def __call__(self, model: LoadedModel) -> LoadedModel:
        from mfmaccel.execute.fusion import fuse as fused

        model = fused(model) if self.fuse else model
        return apply_knobs(model, self.knobs) if self.knobs else model


def adapter(*, knobs: Path | None, fuse: bool) -> Adaptation | None:
    """The adaptation `mfmaccel eval --knobs/--fuse` asks for (the knobs read now, so a bad
    file is refused before the model loads); None when it asks for none."""
    chosen = load_knobs(knobs) if knobs is not None else None
    if chosen is None and not fuse:
        return None
    return Adaptation(chosen, fuse)

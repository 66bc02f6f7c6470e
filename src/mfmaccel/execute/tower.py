"""A model's vision tower: where it sits, its geometry, and a copy of the model with the tower
(or what reads images into it) swapped: the part the resolution, patch-stride and
token-merging knobs share.

Two kinds of model carry a tower: a LLaVA (`VLM`: `module.model.vision_tower`) and a bare vision
model (`VISION`: the module itself). The knobs know three tower families: DINOv2 (medvlm's and
`dinov2-s14`), CLIP's vision model (`tiny-llava`) and DPT's ViT-hybrid (`medvlm-v1`, whose
"patch" is a ResNet stem of stride 32, so only its resolution can change).

A LLaVA's processor writes one `<image>` token for each feature the tower hands the language
model; a knob that changes that count gives the copy a processor that writes the new count
(`ImageTokenProcessor`), since transformers' own one assumes a full grid of patches.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlavaProcessor

from mfmaccel.errors import UserInputError
from mfmaccel.models.record import VISION, VLM, LoadedModel
from mfmaccel.models.views import shallow_copy

DINOV2, CLIP, DPT = "dinov2", "clip_vision_model", "dpt"
KNOWN_FAMILIES = (DINOV2, CLIP, DPT)


@dataclass(frozen=True)
class TowerGeometry:
    """What a tower sees: `image_size` pixels square in `patch_size` squares, plus
    `extra_tokens` (the CLS token) ahead of the grid."""

    image_size: int
    patch_size: int
    extra_tokens: int = 1

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def tokens(self) -> int:
        """The tower's sequence length: the patch grid plus the extra tokens."""
        return self.grid**2 + self.extra_tokens


class ImageTokenProcessor(LlavaProcessor):
    """A LLaVA processor that writes exactly `image_tokens` `<image>` tokens per image, whatever
    the pixel grid: what a tower that merges tokens hands the language model."""

    def __init__(self, image_processor=None, tokenizer=None, *, image_tokens: int, **kwargs):
        # named like LlavaProcessor's: transformers reads a processor's parts off the signature
        super().__init__(image_processor, tokenizer, **kwargs)
        self.image_tokens = image_tokens

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.image_token * self.image_tokens


def vision_tower(model: LoadedModel) -> nn.Module:
    """The module that turns pixels into image features."""
    if model.kind == VLM:
        return model.module.model.vision_tower
    if model.kind == VISION:
        return model.module
    raise UserInputError(f"the vision knobs need a vision or vision-language model; "
                         f"'{model.name}' is a {model.kind} model")


def tower_family(tower: nn.Module, *, knob: str) -> str:
    """The tower's transformers model type, refused with one line when `knob` does not know it."""
    family = getattr(tower.config, "model_type", type(tower).__name__)
    if family not in KNOWN_FAMILIES:
        raise UserInputError(f"{knob} does not know a '{family}' vision tower; it works on "
                             "DINOv2 (medvlm, dinov2-s14), CLIP (tiny-llava) and DPT (medvlm-v1)")
    return family


def patch_embedding(tower: nn.Module) -> nn.Conv2d | None:
    """The convolution that cuts pixels into patch tokens; None for a hybrid (CNN stem)."""
    family = tower.config.model_type
    if family == DINOV2:
        return tower.embeddings.patch_embeddings.projection
    if family == CLIP:
        return tower.embeddings.patch_embedding
    return None


def image_size(model: LoadedModel) -> int:
    """The side, in pixels, of the square the image processor hands the tower."""
    images = _image_processor(model)
    if getattr(images, "do_center_crop", False) and images.crop_size:
        return int(images.crop_size["height"])
    size = images.size
    return int(size["height"] if "height" in size else size["shortest_edge"])


def tower_geometry(model: LoadedModel) -> TowerGeometry:
    """The geometry of `model`'s tower as its processor feeds it now."""
    tower = vision_tower(model)
    conv = patch_embedding(tower)
    patch = int(conv.stride[0]) if conv is not None else int(tower.config.patch_size)
    return TowerGeometry(image_size=image_size(model), patch_size=patch)


def image_tokens(model: LoadedModel, tower_tokens: int) -> int:
    """How many features a LLaVA hands its language model when the tower outputs
    `tower_tokens` at the layer it reads: all of them, less the CLS under the "default"
    feature strategy."""
    strategy = getattr(model.module.config, "vision_feature_select_strategy", "full")
    return tower_tokens - (1 if strategy == "default" else 0)


def resized_image_processor(images, side: int):
    """A copy of the image processor that hands over `side` x `side` pixels."""
    images = copy.deepcopy(images)
    if getattr(images, "do_center_crop", False) and images.crop_size:
        images.crop_size = {"height": side, "width": side}
    images.size = {"shortest_edge": side} if "shortest_edge" in images.size else {
        "height": side, "width": side}
    return images


def shared_tower_copy(tower: nn.Module) -> nn.Module:
    """A shallow copy of a tower (weights and children shared) with its own config.

    transformers installs its hidden-state hooks on a model's layers the first time hidden
    states are asked for, and marks the model that asked (the tower, or a submodel of it); a
    copy made before that would install a second set on the shared layers and every hidden
    state would be recorded twice. One small forward asking for them first installs the one
    set the copy then inherits, whichever module holds the mark."""
    with torch.inference_mode():
        side = _accepted_side(tower)
        tower(torch.zeros(1, tower.config.num_channels, side, side), output_hidden_states=True)
    copied = shallow_copy(tower)
    copied.config = copy.deepcopy(tower.config)
    return copied


def _accepted_side(tower: nn.Module) -> int:
    """An image side the tower runs as it is: CLIP and DPT check theirs, DINOv2 takes any
    multiple of its patch."""
    side = getattr(tower.embeddings, "image_size", None)
    if side is None:
        return 2 * tower.config.patch_size
    return side[0] if isinstance(side, tuple) else int(side)


def with_tower(model: LoadedModel, tower: nn.Module, *, side: int, tokens: int,
               setting: dict) -> LoadedModel:
    """A copy of `model` whose tower is `tower`, whose processor hands it `side`-pixel images
    and writes `tokens` image tokens per image (a LLaVA), weights shared with `model`;
    `setting` joins the record's `meta["vision_knobs"]`."""
    images = resized_image_processor(_image_processor(model), side)
    knobs = {**model.meta.get("vision_knobs", {}), **setting, "image_size": side,
             "image_tokens": tokens}
    meta = {**model.meta, "vision_knobs": knobs}
    if model.kind == VISION:
        return dataclasses.replace(model, module=tower, processor=images, meta=meta)
    outer, inner = shallow_copy(model.module), shallow_copy(model.module.model)
    inner.vision_tower = tower
    outer.model = inner
    outer.config = copy.deepcopy(model.module.config)
    outer.config.vision_config = tower.config
    inner.config = outer.config
    return dataclasses.replace(model, module=outer, processor=_processor(model, images, tokens),
                               meta=meta)


def _image_processor(model: LoadedModel):
    return model.processor.image_processor if model.kind == VLM else model.processor


def _processor(model: LoadedModel, images, tokens: int) -> ImageTokenProcessor:
    old = model.processor
    return ImageTokenProcessor(
        image_processor=images, tokenizer=old.tokenizer, patch_size=old.patch_size,
        vision_feature_select_strategy=old.vision_feature_select_strategy,
        num_additional_image_tokens=old.num_additional_image_tokens,
        chat_template=old.chat_template, image_tokens=tokens,
    )


def reshaped_tower(tower: nn.Module, *, side: int, patch: int,
                   conv: nn.Conv2d | None = None) -> nn.Module:
    """A copy of `tower` (weights shared) that reads `side`-pixel images in `patch`-pixel
    patches, cut by `conv` when given (a new patch embedding); its position embeddings
    follow the new grid. DINOv2 and DPT interpolate their position table to any grid on every
    call; CLIP checks the size and reads its table as it is, so the copy gets one interpolated
    the way CLIP's own `interpolate_pos_encoding` does."""
    if getattr(tower, "merges_tokens", False):
        raise UserInputError("image_size and patch apply to a tower that does not merge tokens: "
                             "set them before r")
    copied = shared_tower_copy(tower)
    copied.config.image_size, copied.config.patch_size = side, patch
    embeddings = shallow_copy(tower.embeddings)
    copied.embeddings = embeddings
    family = tower.config.model_type
    if family == DPT:
        embeddings.image_size = (side, side)
    elif family == DINOV2 and conv is not None:
        cutter = shallow_copy(embeddings.patch_embeddings)
        cutter.projection, cutter.patch_size = conv, (patch, patch)
        embeddings.patch_embeddings, embeddings.patch_size = cutter, patch
    elif family == CLIP:
        _regrid_clip(embeddings, side=side, patch=patch, conv=conv)
    return copied


def _regrid_clip(embeddings: nn.Module, *, side: int, patch: int, conv: nn.Conv2d | None) -> None:
    grid, old_patch = side // patch, embeddings.patch_size
    width = embeddings.position_embedding.weight.shape[1]
    probe = embeddings.position_embedding.weight.new_zeros(1, grid * grid + 1, width)
    table = embeddings.interpolate_pos_encoding(probe, grid * old_patch, grid * old_patch)
    if conv is not None:
        embeddings.patch_embedding = conv
    embeddings.image_size, embeddings.patch_size = side, patch
    embeddings.num_patches, embeddings.num_positions = grid * grid, grid * grid + 1
    embeddings.position_embedding = nn.Embedding.from_pretrained(table[0].detach(), freeze=True)
    embeddings.position_ids = torch.arange(grid * grid + 1)[None]

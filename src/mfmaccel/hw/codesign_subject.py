"""What a co-design quantizes, measures and prices: the module whose parts get bit-widths (a
language model or text encoder itself, or a vision tower seen as an encoder), the batches its
quality is measured on (calibration for the sensitivity, held-out for the checks), and the
accelerator workload with each part's module path in it, so an assignment of bits to parts
becomes bits on the GEMMs that read those weights.

A vision tower (DINOv2 or ViT: medvlm's, `dinov2-s14`, `tiny-vit`) goes through compress's
sensitivity as an encoder: its patch embeddings are computed once in full precision (the patch
projection is a convolution no plan quantizes) and fed to its blocks, and the signal is the
cosine distance of the last block's hidden states, which is what a LLaVA's projector reads
(`vision_feature_layer` -1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mfmaccel.compress.calibration import calibration_batches, clipped_window
from mfmaccel.compress.probe_jobs import ProbeSource
from mfmaccel.data.text import load_text_corpus
from mfmaccel.errors import UserInputError
from mfmaccel.execute.tower import vision_tower
from mfmaccel.hw.ops import Workload
from mfmaccel.hw.workload import trace_module, workload_for_model
from mfmaccel.models.record import CAUSAL_LM, ENCODER, VISION, VLM, LoadedModel
from mfmaccel.runtime.parts import quantizable_parts

TOWER_FAMILIES = ("dinov2", "vit")  # patch embeddings, then `encoder.layer`, nothing between
WINDOW = 512


@dataclass
class Subject:
    """A model as the co-design sees it."""

    name: str
    module: nn.Module  # the parts' owner (`runtime.parts.quantizable_parts`)
    calibration: list[torch.Tensor]  # token ids or embeddings, one sequence per batch
    heldout: list[torch.Tensor]
    workload: Workload
    paths: dict[str, str]  # part -> the module path its GEMM carries in `workload`
    # where sensitivity workers load `module` from (None: held only here, or a vision tower,
    # whose calibration embeddings are too large to send with every probe)
    source: ProbeSource | None = None


class TowerEncoder(nn.Module):
    """A vision tower's blocks as compress sees an encoder: embeddings in (`inputs_embeds`),
    the last block's hidden states out; no token embeddings and no head of its own."""

    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        self.model = TowerBlocks(tower_blocks(tower))  # shared: a copy of this quantizes alone
        self.config = tower.config

    def forward(self, inputs_embeds: torch.Tensor, **_unused) -> torch.Tensor:
        return self.model(inputs_embeds)

    def get_input_embeddings(self) -> None:
        return None

    def get_output_embeddings(self) -> None:
        return None


class TowerBlocks(nn.Module):
    """The blocks in order, each on the last one's hidden states (what the tower's encoder
    loop does)."""

    def __init__(self, layers: nn.ModuleList) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, inputs_embeds: torch.Tensor, **_unused) -> torch.Tensor:
        hidden = inputs_embeds
        for layer in self.layers:
            out = layer(hidden)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden


def tower_blocks(tower: nn.Module) -> nn.ModuleList:
    """The tower's block list: `encoder.layer` (DINOv2) or `layers` (ViT)."""
    encoder = getattr(tower, "encoder", None)
    return getattr(encoder, "layer", None) or tower.layers


def part_paths(owner: nn.Module, traced: nn.Module) -> dict[str, str]:
    """Each part of `owner` -> the path of the same layer inside `traced` (the module the
    workload was read from; the two share their layers)."""
    where = {id(module): path for path, module in traced.named_modules()}
    return {name: where[id(layer)] for name, (_, layer) in quantizable_parts(owner).items()}


def text_subject(model: LoadedModel, *, seq_len: int, calib_tokens: int,
                 tokens: int) -> Subject:
    """A causal LM or text encoder: calibration from the corpus's train half, held-out windows
    from its test half, the workload of one `seq_len`-token pass."""
    window = clipped_window(WINDOW, model.context_length)
    return Subject(model.name, model.module,
                   calibration_batches(model.tokenizer, calib_tokens, window,
                                       positions=model.context_length),
                   heldout_batches(model.tokenizer, tokens, window),
                   workload_for_model(model, seq_len), part_paths(model.module, model.module))


def heldout_batches(tokenizer, tokens: int, window: int) -> list[torch.Tensor]:
    """`tokens` tokens of the corpus's test half as (1, window) id tensors, from its start."""
    ids = tokenizer(load_text_corpus("test"), return_tensors="pt",
                    add_special_tokens=False).input_ids[0][:tokens]
    if len(ids) < 2:
        raise UserInputError(f"--tokens {tokens}: the checks need at least 2 test tokens")
    return [ids[i:i + window].unsqueeze(0) for i in range(0, len(ids) - 1, window)
            if len(ids[i:i + window]) > 1]


def tower_subject(model: LoadedModel, calibration: torch.Tensor,
                  heldout: torch.Tensor) -> Subject:
    """A VLM's vision tower or a vision model, measured on `calibration` and `heldout` pixel
    values (N, C, H, W), priced on one image of that size."""
    tower = checked_tower(model)
    encoder = TowerEncoder(tower)
    workload = trace_module(tower, {"pixel_values": calibration[:1]}, model.name,
                            f"vision tower, pixel_values {tuple(calibration[:1].shape)}")
    return Subject(model.name, encoder, embedded(tower, calibration),
                   embedded(tower, heldout), workload, part_paths(encoder, tower))


def checked_tower(model: LoadedModel) -> nn.Module:
    """The model's vision tower, refused in one line when co-design cannot take it."""
    tower = vision_tower(model)
    family = getattr(tower.config, "model_type", type(tower).__name__)
    if family not in TOWER_FAMILIES:
        raise UserInputError(f"{model.name}: co-design takes a DINOv2 or ViT vision tower, not "
                             f"'{family}'; try medvlm or dinov2-s14")
    layer = getattr(model.module.config, "vision_feature_layer", -1)
    if model.kind == VLM and layer != -1:
        raise UserInputError(f"{model.name} reads tower layer {layer}; co-design measures the "
                             "last block's output and needs vision_feature_layer -1")
    return tower


@torch.inference_mode()
def embedded(tower: nn.Module, pixels: torch.Tensor) -> list[torch.Tensor]:
    """The tower's patch embeddings of each image, one (1, tokens, hidden) batch per image
    (the sensitivity counts a batch's tokens along its second dimension)."""
    dtype = next(tower.parameters()).dtype
    return [tower.embeddings(pixels[i:i + 1].to(dtype)) for i in range(len(pixels))]


def subject_kind(kind: str, name: str) -> str:
    """'text' or 'tower': how a model of `kind` is co-designed (refused with one line when it
    cannot be)."""
    if kind in (CAUSAL_LM, ENCODER):
        return "text"
    if kind in (VISION, VLM):
        return "tower"
    raise UserInputError(f"{name} is a {kind} model; co-design takes a causal LM, a text "
                         "encoder, a vision model or a VLM's vision tower")

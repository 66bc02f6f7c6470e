"""Operator fusion for encoder blocks: a BERT, ViT or DINOv2 model's blocks, or a LLaVA's ViT or
DINOv2 vision tower, rebuilt by `fusion_encoder_blocks`; what `execute.fusion.fuse` calls for
those models. Returns the fused module and the counts its `FusionReport` adds up.

The input model is left as it was: every module on the path from the root to the block list is
copied (`models.views.shallow_copy`), the blocks are new, and they share every weight they do
not fold. transformers installs its hidden-state hooks once per model and marks the model; the
copy of the model that records the blocks' outputs loses that mark, so it hooks its new blocks
the first time hidden states are asked for (a LLaVA asks its tower for them on every image).

Knobs: resolution and patch stride change only the embeddings, so they compose with fusion in
either order. A tower that merges tokens (`execute.tome.MergingTower`) fuses too, and ToMe
applies to a fused tower: its merging blocks run the fused blocks' folded norms and LayerScales
and prepacked products, but compute q, k and v as three slices of the stacked product (noted
in `left_apart`).
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from mfmaccel.errors import UserInputError
from mfmaccel.execute.fusion_encoder_blocks import (
    FUSED_BLOCKS,
    EncoderBlockCounts,
    FusedPreNormBlock,
)
from mfmaccel.execute.tower import vision_tower
from mfmaccel.models.record import LoadedModel
from mfmaccel.models.views import shallow_copy
from mfmaccel.runtime.linear import QuantLinear

ENCODER_FAMILIES = ("bert", "vit", "dinov2")
ENCODER_BLOCKS = {"bert": ("BertLayer",), "vit": ("ViTLayer",), "dinov2": ("Dinov2Layer",)}
TOWER_BLOCKS = ("ViTLayer", "Dinov2Layer")
HOOKS_MARK = "_output_capturing_hooks_installed"  # transformers.utils.output_capturing's


def block_list(module: nn.Module, names: tuple[str, ...]) -> nn.ModuleList | None:
    """The first ModuleList under `module` holding only blocks of the named classes."""
    for child in module.modules():
        if isinstance(child, nn.ModuleList) and len(child) and \
                all(type(block).__name__ in names for block in child):
            return child
    return None


def _fused_list(module: nn.Module) -> bool:
    return any(isinstance(child, EncoderBlockCounts) for child in module.modules())


def _check_bert(model: LoadedModel, layers: nn.ModuleList) -> None:
    if any(layer.is_decoder or layer.add_cross_attention for layer in layers):
        raise UserInputError(f"fusion: {model.name} is a BERT decoder (causal or cross-"
                             "attention); fusion knows BERT encoders")


def with_blocks(module: nn.Module, old: nn.ModuleList, new: list[nn.Module]) -> nn.Module:
    """A copy of `module` whose block list `old` is `new`: every module on the path to it is
    shallow-copied, and the nearest transformers model above it forgets its hooks mark."""
    path = next(name for name, child in module.named_modules() if child is old).split(".")
    root = owner = shallow_copy(module)
    recorder = root
    for name in path[:-1]:
        child = shallow_copy(owner._modules[name])
        owner._modules[name] = child
        owner = child
        recorder = child if isinstance(child, PreTrainedModel) else recorder
    owner._modules[path[-1]] = nn.ModuleList(new)
    recorder.__dict__.pop(HOOKS_MARK, None)
    return root


def fuse_blocks(layers: nn.ModuleList, *, prepack: bool, where: str) -> tuple[list, dict]:
    """(fused blocks, their counts); `where` prefixes what `left_apart` says about them."""
    counts = {"qkv_fused": 0, "gate_up_fused": 0, "norms_folded": 0, "layer_scales_folded": 0,
              "packed_fused": 0, "prepacked": 0, "left_apart": []}
    fused = []
    for index, layer in enumerate(layers):
        block = FUSED_BLOCKS[type(layer).__name__](layer, prepack=prepack).train(layer.training)
        _tally(counts, block, layer, f"{where} block {index}")
        fused.append(block)
    if type(layers[0]).__name__ == "BertLayer":
        counts["left_apart"].append(f"{where} LayerNorms: post-norm, each norm's output is also "
                                    "the next residual, so its affine stays (not folded)")
    return fused, counts


def _tally(counts: dict, block: EncoderBlockCounts, layer: nn.Module, where: str) -> None:
    groups = {"qkv": block.attention.qkv_proj}
    if hasattr(block.mlp, "gate_up_proj"):
        groups["gate_up"] = block.mlp.gate_up_proj
    for name, group in groups.items():
        if group.is_fused:
            counts[f"{name}_fused"] += 1
            counts["packed_fused"] += isinstance(group.fused, QuantLinear)
        else:
            counts["left_apart"].append(f"{where} {name}: layers of different kinds or "
                                        "quantization specs")
    counts["norms_folded"] += block.norms_folded
    counts["layer_scales_folded"] += block.scales_folded
    counts["prepacked"] += block.packed_layers
    if isinstance(block, FusedPreNormBlock):
        if block.norms_folded < 2:
            counts["left_apart"].append(f"{where} norms: {2 - block.norms_folded} LayerNorm "
                                        "affine kept (the product after it is not float)")
        scales = sum(hasattr(layer, name) for name in ("layer_scale1", "layer_scale2"))
        if block.scales_folded < scales:
            counts["left_apart"].append(f"{where} LayerScale: {scales - block.scales_folded} "
                                        "kept (the product before it is not float)")


def _merging_note(tower: nn.Module, where: str) -> list[str]:
    if not getattr(tower, "merges_tokens", False):
        return []
    return [f"{where} q/k/v: ToMe's merging blocks compute q, k and v apart (three slices of "
            "the stacked product)"]


def fuse_encoder(model: LoadedModel, *, prepack: bool = True) -> tuple[nn.Module, dict]:
    """A BERT, ViT or DINOv2 model's blocks fused: (module, counts with `encoder_blocks`)."""
    names = ENCODER_BLOCKS[model.family]
    layers = block_list(model.module, names)
    if layers is None:
        why = "is already fused" if _fused_list(model.module) else f"has no {names[0]} blocks"
        raise UserInputError(f"fusion: {model.name} ({model.family}) {why}; fusion knows "
                             f"{', '.join(ENCODER_FAMILIES)} encoders with "
                             f"{', '.join(n for v in ENCODER_BLOCKS.values() for n in v)} blocks")
    if model.family == "bert":
        _check_bert(model, layers)
    fused, counts = fuse_blocks(layers, prepack=prepack, where="encoder")
    counts["left_apart"] += _merging_note(model.module, "encoder")
    return with_blocks(model.module, layers, fused), {**counts, "encoder_blocks": len(fused)}


def fuse_tower(model: LoadedModel, *, prepack: bool = True) -> tuple[nn.Module, dict]:
    """A LLaVA whose vision tower's ViT or DINOv2 blocks are fused: (module, counts with
    `tower_blocks`); another tower is left as it is, and `left_apart` says so."""
    tower = vision_tower(model)
    layers = block_list(tower, TOWER_BLOCKS)
    if layers is None:
        family = getattr(tower.config, "model_type", type(tower).__name__)
        why = "already fused" if _fused_list(tower) else \
            f"its {family} blocks are not fused (tower fusion knows {' and '.join(TOWER_BLOCKS)})"
        return model.module, {"left_apart": [f"vision tower: {why}"]}
    fused, counts = fuse_blocks(layers, prepack=prepack, where="vision tower")
    counts["left_apart"] += _merging_note(tower, "vision tower")
    return with_blocks(model.module, layers, fused), {**counts, "tower_blocks": len(fused)}

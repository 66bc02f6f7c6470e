"""Operator fusion on the CPU: `fuse(model)` returns the model with every decoder block
rebuilt by `fusion_blocks` (q/k/v in one product, gate/up in one, RMSNorm weights folded into
them, rotary on q and k in one pass), and a `FusionReport` of what was fused in
`meta["fusion"]`. Encoders (BERT, ViT, DINOv2) and a LLaVA's ViT or DINOv2 vision tower are
fused by `fusion_encoder` (LayerNorm affines and LayerScales folded where exact).

The input model is left as it was: the fused one shares every weight it does not restack
(embeddings, head, o/down projections, a LLaVA's tower other than ViT or DINOv2), and holds
new stacked copies of the rest. Fuse after pruning and quantizing (both look for the separate
projections); packed int8 layers of one spec stack as integers, so their int8 kernel still
reads int8.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from torch import nn

from mfmaccel.errors import UserInputError
from mfmaccel.execute.fusion_blocks import FusedDecoderBlock
from mfmaccel.execute.fusion_encoder import ENCODER_FAMILIES, fuse_encoder, fuse_tower
from mfmaccel.models.record import LoadedModel
from mfmaccel.models.views import shallow_copy
from mfmaccel.records import Record
from mfmaccel.runtime.anatomy import decoder_layers
from mfmaccel.runtime.linear import QuantLinear

FAMILIES = ("llama", "qwen2", "llava")  # llava: its llama or qwen2 language model
BLOCKS = ("LlamaDecoderLayer", "Qwen2DecoderLayer")
NORMS = ("LlamaRMSNorm", "Qwen2RMSNorm")


@dataclass
class FusionReport(Record):
    family: str = ""
    blocks: int = 0
    qkv_fused: int = 0  # blocks whose q/k/v became one product
    gate_up_fused: int = 0
    norms_folded: int = 0  # RMSNorm weights moved into the following product
    packed_fused: int = 0  # of those products, how many stack packed (quantized) integers
    prepacked: int = 0  # float products given oneDNN's packed weight layout (fusion_packed)
    left_apart: list[str] = field(default_factory=list)  # why a group stayed separate
    encoder_blocks: int = 0  # a bert, vit or dinov2 model's blocks fused (`blocks`: decoder's)
    tower_blocks: int = 0  # a llava's vision tower blocks fused
    layer_scales_folded: int = 0  # DINOv2 LayerScales moved into the product before them
    # qkv_fused, gate_up_fused, norms_folded, packed_fused, prepacked: over every fused block


def _refuse(model: LoadedModel, why: str) -> UserInputError:
    return UserInputError(f"fusion: {model.name} ({model.family}) {why}; fusion knows "
                          f"{', '.join(FAMILIES)} models with {' or '.join(BLOCKS)} blocks "
                          f"and {', '.join(ENCODER_FAMILIES)} encoders")


def _check_supported(model: LoadedModel) -> nn.ModuleList:
    """The decoder blocks to fuse; a UserInputError naming the family otherwise."""
    if model.family not in FAMILIES:
        raise _refuse(model, "is not a supported family")
    layers = decoder_layers(model.module)
    for layer in layers:
        if type(layer).__name__ not in BLOCKS:
            knob = getattr(layer, "knob", None)
            why = f"{knob} applied: fuse first, then apply it" if knob else "already fused?"
            raise _refuse(model, f"has {type(layer).__name__} blocks ({why})")
        norms = (layer.input_layernorm, layer.post_attention_layernorm)
        if any(type(norm).__name__ not in NORMS for norm in norms):
            raise _refuse(model, "has norms other than RMSNorm")
    return layers


def _with_layers(module: nn.Module, old: nn.ModuleList, new: list[nn.Module]) -> nn.Module:
    """A shallow copy of `module` whose block list is `new`; every module on the path from the
    root to the list is copied too, so the original keeps its own blocks."""
    path = next(name for name, child in module.named_modules() if child is old).split(".")
    root = owner = shallow_copy(module)
    for name in path[:-1]:
        child = shallow_copy(owner._modules[name])
        owner._modules[name] = child
        owner = child
    owner._modules[path[-1]] = nn.ModuleList(new)
    return root


def _tally(report: FusionReport, index: int, block: FusedDecoderBlock) -> None:
    groups = {"qkv": block.self_attn.qkv_proj, "gate_up": block.mlp.gate_up_proj}
    for name, group in groups.items():
        if group.is_fused:
            setattr(report, f"{name}_fused", getattr(report, f"{name}_fused") + 1)
            report.packed_fused += isinstance(group.fused, QuantLinear)
        else:
            report.left_apart.append(f"block {index} {name}: layers of different kinds or "
                                     "quantization specs")
    report.norms_folded += block.norms_folded
    report.prepacked += block.packed_layers


def _add(report: FusionReport, counts: dict) -> FusionReport:
    """`counts` (from `fusion_encoder`) added into `report`."""
    for name, value in counts.items():
        setattr(report, name, getattr(report, name) + value)
    return report


def _fused(model: LoadedModel, module: nn.Module, report: FusionReport) -> LoadedModel:
    return dataclasses.replace(model, module=module,
                               meta={**model.meta, "fusion": report.to_dict()})


def fuse(model: LoadedModel, *, prepack: bool = True) -> LoadedModel:
    """`model` with its decoder or encoder blocks fused (see the module docstring), a LLaVA's
    vision tower too; the same greedy tokens, outputs equal up to rounding. `prepack`: float
    products also get oneDNN's packed weight layout (`fusion_packed`). Unknown architectures:
    UserInputError."""
    if model.family in ENCODER_FAMILIES:
        module, counts = fuse_encoder(model, prepack=prepack)
        return _fused(model, module, _add(FusionReport(family=model.family), counts))
    layers = _check_supported(model)
    report = FusionReport(family=model.family, blocks=len(layers))
    fused = []
    for index, layer in enumerate(layers):
        block = FusedDecoderBlock(layer, prepack=prepack).train(layer.training)
        _tally(report, index, block)
        fused.append(block)
    module = _with_layers(model.module, layers, fused)
    if model.family == "llava":
        module, counts = fuse_tower(dataclasses.replace(model, module=module), prepack=prepack)
        _add(report, counts)
    return _fused(model, module, report)

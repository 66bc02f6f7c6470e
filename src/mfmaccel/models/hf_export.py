"""`export_hf`: any loaded model as a plain fp16 Hugging Face folder, packed layers dequantized.

A packed folder (`runtime.storage`) needs mfmaccel to load; this one needs only transformers.
The weights are our dequantized ones rounded to fp16, so the folder's model computes what the
packed one does up to fp16 rounding; nothing says it was ever quantized.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from mfmaccel.fileio import atomic_directory, check_parent_folder
from mfmaccel.models.gguf_export import ExportReport
from mfmaccel.models.record import LoadedModel
from mfmaccel.runtime.linear import QuantLinear


def export_hf(model: LoadedModel, out: Path) -> ExportReport:
    """Write `model` to the folder `out` (a new, empty or mfmaccel-written folder)."""
    out = Path(out)
    check_parent_folder(out)
    module = plain_copy(model.module).half()
    with atomic_directory(out) as tmp:
        module.save_pretrained(tmp, safe_serialization=True)
        for part in (model.processor, model.tokenizer):
            if part is not None:
                part.save_pretrained(tmp)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    tensors = {name: str(p.dtype).removeprefix("torch.")
               for name, p in module.state_dict().items()}
    return ExportReport(str(out), "hf", size, tensors)


def plain_copy(module: nn.Module) -> nn.Module:
    """A copy of `module` whose packed layers are `nn.Linear`/`nn.Embedding` again, holding the
    dequantized weights; a tied model has its embedding tied back to the head."""
    copied = copy.deepcopy(module)
    for name, layer in list(copied.named_modules()):
        if isinstance(layer, QuantLinear):
            copied.set_submodule(name, _plain(layer))
    config = getattr(copied, "config", None)
    if config is not None:
        for key in ("quantization_config",):
            if hasattr(config, key):
                delattr(config, key)
    if copied.get_output_embeddings() is not None:
        embed = copied.get_input_embeddings()
        if "weight" not in embed._parameters:  # tied to a packed head: a plain attribute now
            del embed.weight
            embed.weight = copied.get_output_embeddings().weight
    return copied


def _plain(layer: QuantLinear) -> nn.Module:
    weight = nn.Parameter(layer.dequantized_weight().detach().clone(), requires_grad=False)
    if layer.is_lookup:
        plain = nn.Embedding(layer.out_features, layer.in_features)
    else:
        plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        if layer.bias is not None:
            plain.bias = nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
    plain.weight = weight
    return plain.to(torch.float32)

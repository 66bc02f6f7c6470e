"""A quantized model on disk: an ordinary HF folder (config.json, tokenizer) whose
`model.safetensors` holds packed integers, fp16 scales/zeros and the fp16 remainder, plus
`quantization.json` (the plan). Reloading rebuilds the architecture from its config, swaps in
`QuantLinear`s where the plan says, and loads the tensors: identical outputs, no pickle."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mfmaccel.errors import UserInputError
from mfmaccel.fileio import atomic_directory
from mfmaccel.runtime.anatomy import embeddings_tied
from mfmaccel.runtime.grid import QuantizedTensor, QuantSpec
from mfmaccel.runtime.linear import QuantLinear, matmul_layers
from mfmaccel.runtime.parts import quantizable_parts
from mfmaccel.runtime.plan import (
    FULL,
    QuantPlan,
    check_plan,
    packed_part,
    replace_part,
    tie_embeddings_to_head,
)

PLAN_FILE = "quantization.json"
WEIGHTS_FILE = "model.safetensors"


def _tied_embedding_key(module: torch.nn.Module) -> str | None:
    """State-dict key the freshly built model expects for token embeddings that the saved
    model rebuilds from its quantized tied head (so the file rightly lacks it)."""
    if not (isinstance(module.get_output_embeddings(), QuantLinear) and embeddings_tied(module)):
        return None
    embed = module.get_input_embeddings()
    return next(f"{name}.weight" for name, m in module.named_modules() if m is embed)


def save_quantized(module: torch.nn.Module, plan: dict, folder: str | Path, *,
                   preprocessors: tuple = ()) -> Path:
    """Write `module` (quantized by `plan`) with its tokenizer or processor as a reloadable
    folder, atomically."""
    # a tied embedding reading a quantized head is not a state-dict entry: stored once, as the head
    state = {key: (tensor.half() if tensor.is_floating_point() else tensor).contiguous()
             for key, tensor in module.state_dict().items()}
    module.config.architectures = [type(module).__name__]  # reloads as this class, as HF does
    with atomic_directory(Path(folder)) as tmp:
        module.config.save_pretrained(tmp)
        for part in preprocessors:
            if part is not None:
                part.save_pretrained(tmp)
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / PLAN_FILE).write_text(json.dumps(plan, indent=1) + "\n")
    return Path(folder)


def is_quantized_folder(folder: Path) -> bool:
    return (folder / PLAN_FILE).is_file()


def load_quantized_module(
    folder: Path, module: torch.nn.Module
) -> tuple[torch.nn.Module, dict]:
    """Turn `module` (built from the folder's config) into the saved quantized model; returns
    it with the plan (for `LoadedModel.meta`)."""
    try:
        plan = QuantPlan(**json.loads((folder / PLAN_FILE).read_text()))
    except (json.JSONDecodeError, TypeError) as err:
        raise UserInputError(f"{folder / PLAN_FILE} is not a valid quantization plan ({err})") \
            from None
    try:
        check_plan(module, plan)
    except UserInputError as err:
        raise UserInputError(f"{folder / PLAN_FILE}: {err}") from None
    parts = quantizable_parts(module)
    for name, label in plan.choice.items():
        if label == FULL:
            continue
        part, layer = parts[name]
        spec = QuantSpec(**plan.specs[label])
        empty = QuantizedTensor(torch.zeros(part.out_features, part.in_features,
                                            dtype=torch.int16),
                                torch.ones(part.out_features, spec.groups(part.in_features)),
                                torch.zeros(part.out_features, spec.groups(part.in_features)),
                                spec)
        replace_part(module, name, layer, packed_part(name, empty, layer))
    if plan.activations is not None:
        for layer in matmul_layers(module).values():
            layer.set_activations(plan.activations, 1.0)  # the file holds the real scales
    state = load_file(str(folder / WEIGHTS_FILE))
    expected = module.state_dict()
    skip = _tied_embedding_key(module)
    for key, tensor in state.items():
        if key not in expected or expected[key].shape != tensor.shape:
            raise UserInputError(
                f"{folder / WEIGHTS_FILE}: tensor {key} {tuple(tensor.shape)} disagrees with the "
                "config and quantization plan; re-run `mfmaccel quantize`"
            )
    missing = sorted(set(expected) - set(state) - {skip})
    if missing:
        raise UserInputError(f"{folder / WEIGHTS_FILE} lacks {missing[0]}; re-run the export")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)
    tie_embeddings_to_head(module)
    module.eval()
    return module, plan.to_dict()

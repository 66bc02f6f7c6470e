"""Quantize a model by a plan (one spec, or fp16, per part), with round-to-nearest or GPTQ,
replacing its linear layers by packed `QuantLinear`s in place.

GPTQ runs block by block (Frantar et al.): each block's Hessians come from the inputs the
already-quantized earlier blocks produce, starting from the cached full-precision input of the
first block. Parameters left unquantized are rounded to fp16, the precision they are stored
and counted in, so the model in memory computes exactly what the reloaded one will.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from mfmaccel.compress.blocks import capture_blocks
from mfmaccel.compress.calibration import calibrate_activations, first_output
from mfmaccel.compress.gptq import HessianAccumulator, quantize_gptq
from mfmaccel.compress.smooth import smooth_llama
from mfmaccel.errors import UserInputError
from mfmaccel.models.record import LoadedModel
from mfmaccel.runtime.anatomy import decoder_layers, final_norm, weight_matrix
from mfmaccel.runtime.grid import QuantSpec, quantize_rtn
from mfmaccel.runtime.linear import QuantLinear
from mfmaccel.runtime.parts import EMBED, HEAD, quantizable_parts
from mfmaccel.runtime.plan import (
    FULL,
    QuantPlan,
    check_plan,
    packed_part,
    replace_part,
    tie_embeddings_to_head,
)


def uniform_plan(module: nn.Module, spec: QuantSpec, method: str = "rtn",
                 *, head: bool = True, activations: str | None = None,
                 smoothing: float | None = None) -> QuantPlan:
    choice = {name: spec.label for name in quantizable_parts(module)}
    if not head:
        choice[HEAD] = FULL
    return QuantPlan(choice, {spec.label: _fields(spec)}, method, activations,
                     smoothing=smoothing)


def storage_bytes(module: nn.Module) -> int:
    """What the model takes on disk: packed layers at their true size, every other parameter
    at 2 bytes (fp16), tied weights once. The FP16 model is the 100% every budget refers to."""
    packed = sum(m.nbytes for m in module.modules() if isinstance(m, QuantLinear))
    return packed + 2 * sum(p.numel() for p in module.parameters())


def _fields(spec: QuantSpec) -> dict:
    return {"bits": spec.bits, "group_size": spec.group_size, "symmetric": spec.symmetric}


def _quantized_layer(
    name: str, layer: nn.Module, spec: QuantSpec, hessian: torch.Tensor | None
) -> QuantLinear:
    weight = weight_matrix(layer).detach().half().float()  # as stored: fp16 precision
    qt = quantize_rtn(weight, spec) if hessian is None else quantize_gptq(weight, hessian, spec)
    return packed_part(name, qt, layer)


def _round_rest_to_fp16(module: nn.Module, read_only: frozenset[int] = frozenset()) -> None:
    """Round the parameters in place to fp16 precision, as they will be stored; those in
    `read_only` (ids of weights about to be replaced, which `_quantized_layer` reads rounded)
    are left as they are, so a copy of a model can share them with it."""
    with torch.no_grad():
        for p in module.parameters():
            if p.is_floating_point() and id(p) not in read_only:
                p.copy_(p.half().float())


def quantize_model(
    model: LoadedModel, plan: QuantPlan, batches: Sequence[torch.Tensor] = (),
    progress: Callable[[int, int], None] | None = None,
) -> LoadedModel:
    """Apply `plan` to `model.module` in place (GPTQ, smoothing and per-tensor activation
    scales need calibration `batches`); the plan goes into `model.meta` for saving."""
    quantize_module(model.module, plan, batches, progress)
    model.meta["quantization"] = plan.to_dict()
    return model


def quantize_module(
    module: nn.Module, plan: QuantPlan, batches: Sequence[torch.Tensor] = (),
    progress: Callable[[int, int], None] | None = None,
) -> nn.Module:
    """`quantize_model` on a bare module (e.g. a copy of a target made into its draft)."""
    check_plan(module, plan)
    if plan.method == "gptq" and not batches:
        raise UserInputError("GPTQ needs calibration text; give calibration batches")
    if plan.smoothing is not None:
        if not batches:
            raise UserInputError("smoothing needs calibration text; give calibration batches")
        smooth_llama(module, batches, plan.smoothing)
    parts = quantizable_parts(module)
    chosen = {n: plan.spec(n) for n in parts if plan.spec(n) is not None}
    # round to nearest reads each replaced weight once; GPTQ's Hessians need every block's
    # weights as stored, so there everything is rounded first
    replaced = frozenset(id(parts[n][1].weight) for n in chosen) - frozenset(
        id(parts[n][1].weight) for n in parts if n not in chosen)
    _round_rest_to_fp16(module, replaced if plan.method == "rtn" else frozenset())
    if plan.method == "rtn":
        for step, (name, spec) in enumerate(chosen.items()):
            replace_part(module, name, parts[name][1],
                     _quantized_layer(name, parts[name][1], spec, None))
            if progress:
                progress(step + 1, len(chosen))
    else:
        _gptq_sequential(module, parts, chosen, list(batches), progress)
    tie_embeddings_to_head(module)
    if plan.activations is not None:
        calibrate_activations(module, plan.activations, batches, plan.act_percentile)
    return module


@torch.inference_mode()
def _gptq_sequential(module, parts, chosen, batches, progress) -> None:
    """Embeddings (a lookup: no inputs, so no Hessian) round to nearest first, so the blocks'
    Hessians see the inputs the quantized model will give them."""
    if EMBED in chosen:
        embed = parts[EMBED][1]
        replace_part(module, EMBED, embed, _quantized_layer(EMBED, embed, chosen[EMBED], None))
    cache = capture_blocks(module, batches)
    hidden = [cache.inputs[0][b] for b in range(len(batches))]
    layers = decoder_layers(module)
    for index, layer in enumerate(layers):
        names = [n for n in chosen if parts[n][0].block == f"layers.{index}"]
        kwargs = cache.kwargs[index]
        hessians = _collect_hessians({n: parts[n][1] for n in names},
                                     layer, hidden, kwargs)
        for name in names:
            replace_part(module, name, parts[name][1],
                     _quantized_layer(name, parts[name][1], chosen[name], hessians[name]))
        hidden = [first_output(layer(h, **cache.kwargs[index][b])) for b, h in enumerate(hidden)]
        if progress:
            progress(index + 1, len(layers) + 1)
    if HEAD in chosen:
        head = parts[HEAD][1]
        accumulator = HessianAccumulator(weight_matrix(head).shape[1])
        for h in hidden:
            accumulator.add(final_norm(module)(h))
        replace_part(module, HEAD, head,
                 _quantized_layer(HEAD, head, chosen[HEAD], accumulator.hessian))
    if progress:
        progress(len(layers) + 1, len(layers) + 1)


def _collect_hessians(layers: dict[str, nn.Module], block: nn.Module,
                      hidden: list[torch.Tensor], kwargs: list[dict]) -> dict:
    """Input Hessians of `layers` while `block` runs on every calibration batch."""
    accumulators = {n: HessianAccumulator(weight_matrix(m).shape[1]) for n, m in layers.items()}
    handles = [m.register_forward_pre_hook(lambda _, args, n=n: accumulators[n].add(args[0]))
               for n, m in layers.items()]
    try:
        for h, kw in zip(hidden, kwargs, strict=True):
            block(h, **kw)
    finally:
        for handle in handles:
            handle.remove()
    return {n: a.hessian for n, a in accumulators.items()}

"""Quantize a model by a plan (one spec, or fp16, per part), with round-to-nearest or GPTQ,
replacing its linear layers by packed `QuantLinear`s in place.

GPTQ runs block by block (Frantar et al.): each block's Hessians come from the inputs the
already-quantized earlier blocks produce, starting from the cached full-precision input of the
first block. Parameters left unquantized are rounded to fp16, the precision they are stored
and counted in, so the model in memory computes exactly what the reloaded one will.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mfmaccel.compress.blocks import capture_blocks, decoder_layers, final_norm
from mfmaccel.compress.calibration import first_output
from mfmaccel.compress.fakequant import weight_matrix
from mfmaccel.compress.mixed import FULL
from mfmaccel.compress.quant.activation import calibrate_activations, check_act_mode
from mfmaccel.compress.quant.embedding import QuantEmbedding
from mfmaccel.compress.quant.gptq import HessianAccumulator, quantize_gptq
from mfmaccel.compress.quant.grid import QuantizedTensor, QuantSpec, quantize_rtn
from mfmaccel.compress.quant.linear import QuantLinear
from mfmaccel.compress.sensitivity import EMBED, HEAD, embeddings_tied, quantizable_parts
from mfmaccel.compress.smooth import smooth_llama
from mfmaccel.errors import UserInputError
from mfmaccel.models.record import LoadedModel
from mfmaccel.records import Record

# Each method in words, and what the other would cost, for the user to read before a long run.
METHOD_NOTES = {
    "rtn": "round to nearest (seconds; --method gptq compensates rounding errors, more "
           "accurate and much slower)",
    "gptq": "GPTQ (rounding errors compensated block by block on calibration text: minutes "
            "on a CPU; --method rtn rounds to nearest in seconds, a little less accurate)",
}
METHODS = tuple(METHOD_NOTES)


def describe_method(method: str) -> str:
    return METHOD_NOTES.get(method, method)


@dataclass
class QuantPlan(Record):
    """Which spec each part gets ("fp16": left as is), how the integers are found, and whether
    the int8 layers also take int8 activations (W8A8: "token" or calibrated "tensor")."""

    choice: dict[str, str]
    specs: dict[str, dict]  # label -> QuantSpec fields
    method: str = "rtn"
    activations: str | None = None
    act_percentile: float = 100.0
    smoothing: float | None = None  # SmoothQuant alpha, applied before quantizing

    def spec(self, part: str) -> QuantSpec | None:
        label = self.choice.get(part, FULL)
        return None if label == FULL else QuantSpec(**self.specs[label])


def uniform_plan(module: nn.Module, spec: QuantSpec, method: str = "rtn",
                 head: bool = True, activations: str | None = None,
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


def check_plan(module: nn.Module, plan: QuantPlan) -> None:
    parts = quantizable_parts(module)
    unknown = sorted(set(plan.choice) - set(parts))
    if unknown:
        raise UserInputError(
            f"quantization plan names {unknown[0]}, which this model does not have; parts look "
            f"like {next(iter(parts))} (see `mfmaccel quantize --help`)"
        )
    if plan.method not in METHODS:
        raise UserInputError(f"unknown method '{plan.method}'; choose one of {', '.join(METHODS)}")
    for label in set(plan.choice.values()) - {FULL}:
        if label not in plan.specs:
            raise UserInputError(f"quantization plan uses '{label}' without defining it")
        spec = QuantSpec(**plan.specs[label])  # validates the bit-width
        if plan.activations is not None and not _is_int8_channel(spec):
            raise UserInputError(f"int8 activations need int8-c-sym weights, but the plan uses "
                                 f"{label}; quantize with --uniform int8-c-sym")
    if plan.activations is not None:
        check_act_mode(plan.activations)


def _is_int8_channel(spec: QuantSpec) -> bool:
    return spec.bits == 8 and spec.symmetric and spec.group_size is None


def _replace(module: nn.Module, name: str, layer: nn.Module, new: QuantLinear) -> None:
    if name == HEAD:
        module.set_output_embeddings(new)
        return
    if name == EMBED:
        module.set_input_embeddings(new)
        return
    block, _, path = name.removeprefix("layers.").partition(".")
    owner = decoder_layers(module)[int(block)]
    parent_path, _, attr = path.rpartition(".")
    setattr(owner.get_submodule(parent_path) if parent_path else owner, attr, new)


def packed_part(name: str, qt: QuantizedTensor, layer: nn.Module) -> QuantLinear:
    """The packed module that takes the place of part `name` (its `layer`)."""
    kind = QuantEmbedding if name == EMBED else QuantLinear
    return kind.from_quantized(qt, getattr(layer, "bias", None))


def _quantized_layer(
    name: str, layer: nn.Module, spec: QuantSpec, hessian: torch.Tensor | None
) -> QuantLinear:
    weight = weight_matrix(layer).detach().half().float()  # as stored: fp16 precision
    qt = quantize_rtn(weight, spec) if hessian is None else quantize_gptq(weight, hessian, spec)
    return packed_part(name, qt, layer)


def _tie_embeddings_to_head(module: nn.Module) -> None:
    """A tied model keeps reading its token embeddings from the (now quantized) head: the
    embedding's weight becomes a plain attribute sharing the head's dequantized tensor, so it
    is neither a parameter (counted twice) nor a state-dict entry (stored twice)."""
    head, embed = module.get_output_embeddings(), module.get_input_embeddings()
    if isinstance(head, QuantLinear) and embeddings_tied(module):
        if "weight" in embed._parameters:
            del embed._parameters["weight"]
        embed.weight = head.dequantized_weight()


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
            _replace(module, name, parts[name][1],
                     _quantized_layer(name, parts[name][1], spec, None))
            if progress:
                progress(step + 1, len(chosen))
    else:
        _gptq_sequential(module, parts, chosen, list(batches), progress)
    _tie_embeddings_to_head(module)
    if plan.activations is not None:
        calibrate_activations(module, plan.activations, batches, plan.act_percentile)
    return module


@torch.inference_mode()
def _gptq_sequential(module, parts, chosen, batches, progress) -> None:
    """Embeddings (a lookup: no inputs, so no Hessian) round to nearest first, so the blocks'
    Hessians see the inputs the quantized model will give them."""
    if EMBED in chosen:
        embed = parts[EMBED][1]
        _replace(module, EMBED, embed, _quantized_layer(EMBED, embed, chosen[EMBED], None))
    cache = capture_blocks(module, batches)
    hidden = [cache.inputs[0][b] for b in range(len(batches))]
    layers = decoder_layers(module)
    for index, layer in enumerate(layers):
        names = [n for n in chosen if parts[n][0].block == f"layers.{index}"]
        kwargs = cache.kwargs[index]
        hessians = _collect_hessians({n: parts[n][1] for n in names},
                                     layer, hidden, kwargs)
        for name in names:
            _replace(module, name, parts[name][1],
                     _quantized_layer(name, parts[name][1], chosen[name], hessians[name]))
        hidden = [first_output(layer(h, **cache.kwargs[index][b])) for b, h in enumerate(hidden)]
        if progress:
            progress(index + 1, len(layers) + 1)
    if HEAD in chosen:
        head = parts[HEAD][1]
        accumulator = HessianAccumulator(weight_matrix(head).shape[1])
        for h in hidden:
            accumulator.add(final_norm(module)(h))
        _replace(module, HEAD, head,
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

"""A quantization plan: which number format each part of a model gets, how its integers were
found, and whether its int8 layers take int8 activations. It is stored beside the packed
weights (`storage`), and applying it swaps packed layers in for the parts it names."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from mfmaccel.errors import UserInputError
from mfmaccel.records import Record
from mfmaccel.runtime.activation import check_act_mode
from mfmaccel.runtime.anatomy import decoder_layers, embeddings_tied
from mfmaccel.runtime.choices import Method
from mfmaccel.runtime.embedding import QuantEmbedding
from mfmaccel.runtime.grid import QuantizedTensor, QuantSpec
from mfmaccel.runtime.linear import QuantLinear
from mfmaccel.runtime.parts import EMBED, HEAD, quantizable_parts

FULL = "fp16"  # keep the part in 16-bit floating point
# Each method in words, and what the other would cost, for the user to read before a long run.
METHOD_NOTES = {
    Method.rtn: "round to nearest (seconds; --method gptq compensates rounding errors, more "
                "accurate and much slower)",
    Method.gptq: "GPTQ (rounding errors compensated block by block on calibration text: "
                 "minutes on a CPU; --method rtn rounds to nearest in seconds, a little less "
                 "accurate)",
}


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


def check_plan(module: nn.Module, plan: QuantPlan) -> None:
    parts = quantizable_parts(module)
    unknown = sorted(set(plan.choice) - set(parts))
    if unknown:
        raise UserInputError(
            f"quantization plan names {unknown[0]}, which this model does not have; parts look "
            f"like {next(iter(parts))} (see `mfmaccel quantize --help`)"
        )
    if plan.method not in tuple(Method):
        raise UserInputError(f"unknown method '{plan.method}'; choose one of {', '.join(Method)}")
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


def replace_part(module: nn.Module, name: str, layer: nn.Module, new: QuantLinear) -> None:
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


def tie_embeddings_to_head(module: nn.Module) -> None:
    """A tied model keeps reading its token embeddings from the (now quantized) head: the
    embedding's weight becomes a plain attribute sharing the head's dequantized tensor, so it
    is neither a parameter (counted twice) nor a state-dict entry (stored twice)."""
    head, embed = module.get_output_embeddings(), module.get_input_embeddings()
    if isinstance(head, QuantLinear) and embeddings_tied(module):
        if "weight" in embed._parameters:
            del embed._parameters["weight"]
        embed.weight = head.dequantized_weight()

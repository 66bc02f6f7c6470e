"""A BERT-family encoder (e.g. `minilm-l6`) as an integer-only program.

Per layer, with every tensor an integer at a static scale calibrated on real text:
q, k, v = int8 projections; scores = q k^T in int32 (1/sqrt(d_head) folded into the softmax's
input scale); probabilities = integer softmax (uint8, scale 2^-8); context = probabilities x v,
requantized to int8; the output projection lands in int16 at the residual sum's scale, the
residual is added there, and integer LayerNorm brings it back to int8; the FFN is int8 ->
i-GELU -> int8 -> int16 residual -> LayerNorm. Embeddings are int16 tables at one shared scale,
summed and normalised in integers. Only the tokenizer, the table lookup and the final
dequantisation (for pooling on the host) are outside the integer datapath.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intexec.calibrate import RangeRecorder, record_ranges
from mfmaccel.hw.intexec.linear import IntLinear
from mfmaccel.hw.intops import (
    INT8,
    INT32,
    Dyadic,
    IExp,
    IGelu,
    ILayerNorm,
    IntRange,
    check_range,
    dyadic,
    exact_matmul,
    i_softmax,
    requantize,
    residual_add,
    rounding_shift,
)
from mfmaccel.hw.intops.activations import EXP_FINEST_SCALE

INT16 = IntRange(16)
MASKED = -(1 << 30)  # a score far below any real one: i-exp turns it into exactly 0
SOFTMAX_BITS = 8


@dataclass(frozen=True)
class IntAttention:
    query: IntLinear
    key: IntLinear
    value: IntLinear
    heads: int
    exp: IExp
    context: Dyadic  # probabilities x v (scale 2^-8 * S_v) -> int8 context
    coarsen: Dyadic | None  # scores -> the exp's input scale, when theirs is too fine

    def __call__(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, _ = h.shape

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, length, self.heads, -1).transpose(1, 2)

        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        scores = check_range(exact_matmul(q, k.transpose(-1, -2)), INT32, "attention scores")
        if self.coarsen is not None:
            scores = rounding_shift(scores * self.coarsen.m, self.coarsen.shift)
        scores = scores.masked_fill(~mask[:, None, None, :].bool(), MASKED)
        probs = i_softmax(scores, self.exp, SOFTMAX_BITS)
        context = check_range(exact_matmul(probs, v), INT32, "attention context")
        return requantize(context, self.context).transpose(1, 2).reshape(batch, length, -1)


@dataclass(frozen=True)
class IntBertLayer:
    attention: IntAttention
    attention_out: IntLinear  # -> int16 at the first residual's scale
    scales: dict[str, float]
    norm1: ILayerNorm
    intermediate: IntLinear
    gelu: IGelu
    gelu_out: Dyadic
    output: IntLinear  # -> int16 at the second residual's scale
    norm2: ILayerNorm

    def __call__(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = self.scales
        attended = self.attention_out(self.attention(h, mask))
        h1 = self.norm1(residual_add(attended, s["res1"], h, s["in"], s["res1"], INT16))
        hidden = requantize(self.gelu(self.intermediate(h1)), self.gelu_out)
        out = self.output(hidden)
        return self.norm2(residual_add(out, s["res2"], h1, s["h1"], s["res2"], INT16))


@dataclass(frozen=True)
class IntBert:
    tables: dict[str, torch.Tensor]  # word, position, token_type: int16 at one scale
    embed_norm: ILayerNorm
    layers: list[IntBertLayer]
    scale_out: float

    def __call__(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Final hidden states as int8 (multiply by `scale_out` for real values)."""
        positions = torch.arange(input_ids.shape[1])
        summed = (self.tables["word"][input_ids] + self.tables["position"][positions]
                  + self.tables["token_type"][0])
        h = self.embed_norm(summed)
        for layer in self.layers:
            h = layer(h, mask)
        return h


def _taps(module: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    taps = {"embed": (module.embeddings.LayerNorm, "output")}
    for i, layer in enumerate(module.encoder.layer):
        attention = layer.attention
        taps.update({
            f"{i}.q": (attention.self.query, "output"), f"{i}.k": (attention.self.key, "output"),
            f"{i}.v": (attention.self.value, "output"), f"{i}.ctx": (attention.self, "output"),
            f"{i}.res1": (attention.output.LayerNorm, "input"),
            f"{i}.h1": (attention.output.LayerNorm, "output"),
            f"{i}.ff": (layer.intermediate.dense, "output"),
            f"{i}.gelu": (layer.intermediate, "output"),
            f"{i}.res2": (layer.output.LayerNorm, "input"),
            f"{i}.h2": (layer.output.LayerNorm, "output"),
        })
    return taps


def _norm(layer_norm: nn.LayerNorm, scale_in: float, scale_out: float) -> ILayerNorm:
    return ILayerNorm.build(layer_norm.weight.detach(), layer_norm.bias.detach(), scale_in,
                            scale_out, layer_norm.eps)


def _layer(layer: nn.Module, ranges: RangeRecorder, i: int, scale_in: float,
           heads: int) -> IntBertLayer:
    def s8(name: str) -> float:
        return ranges.scale(f"{i}.{name}")

    def s16(name: str) -> float:
        return ranges.scale(f"{i}.{name}", INT16.high)

    attention = layer.attention.self
    head_dim = attention.query.out_features // heads
    score_scale = s8("q") * s8("k") / math.sqrt(head_dim)
    exp_scale = max(score_scale, EXP_FINEST_SCALE)
    coarsen = dyadic(score_scale / exp_scale) if exp_scale > score_scale else None
    gelu = IGelu.build(s8("ff"))
    return IntBertLayer(
        attention=IntAttention(
            IntLinear.build(attention.query, scale_in, s8("q")),
            IntLinear.build(attention.key, scale_in, s8("k")),
            IntLinear.build(attention.value, scale_in, s8("v")), heads,
            IExp.build(exp_scale), dyadic(s8("v") / 2**SOFTMAX_BITS / s8("ctx")), coarsen),
        attention_out=IntLinear.build(layer.attention.output.dense, s8("ctx"), s16("res1"),
                                      INT16),
        scales={"in": scale_in, "res1": s16("res1"), "h1": s8("h1"), "res2": s16("res2")},
        norm1=_norm(layer.attention.output.LayerNorm, s16("res1"), s8("h1")),
        intermediate=IntLinear.build(layer.intermediate.dense, s8("h1"), s8("ff")),
        gelu=gelu, gelu_out=dyadic(gelu.scale_out / s8("gelu")),
        output=IntLinear.build(layer.output.dense, s8("gelu"), s16("res2"), INT16),
        norm2=_norm(layer.output.LayerNorm, s16("res2"), s8("h2")),
    )


def _check_bert(module: nn.Module) -> None:
    config = module.config
    if not (hasattr(module, "embeddings") and hasattr(module, "encoder")):
        raise UserInputError(f"{type(module).__name__} is not a BERT-family encoder; integer "
                             "execution covers BERT encoders (e.g. minilm-l6)")
    if getattr(config, "hidden_act", "gelu") not in ("gelu", "gelu_new", "gelu_python"):
        raise UserInputError(f"activation {config.hidden_act!r} has no integer unit; "
                             "i-GELU covers gelu")
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise UserInputError("only absolute position embeddings have an integer unit here")


def convert_bert(module: nn.Module, batches: Sequence[dict[str, torch.Tensor]]) -> IntBert:
    """Calibrate on `batches` (tokenizer outputs of real text) and build the integer program."""
    _check_bert(module)
    module.eval()
    ranges = record_ranges(module, _taps(module), lambda: (module(**b) for b in batches))
    embeddings = module.embeddings
    tables = {name: getattr(embeddings, f"{name}_embeddings").weight.detach().double()
              for name in ("word", "position", "token_type")}
    table_scale = max(float(t.abs().max()) for t in tables.values()) / ((1 << 14) - 1)
    int_tables = {n: torch.round(t / table_scale).long() for n, t in tables.items()}
    heads = module.config.num_attention_heads
    layers, scale = [], ranges.scale("embed")
    for i, layer in enumerate(module.encoder.layer):
        layers.append(_layer(layer, ranges, i, scale, heads))
        scale = ranges.scale(f"{i}.h2")
    embed_norm = _norm(embeddings.LayerNorm, table_scale, ranges.scale("embed"))
    return IntBert(int_tables, embed_norm, layers, scale)


__all__ = ["INT8", "IntBert", "convert_bert"]

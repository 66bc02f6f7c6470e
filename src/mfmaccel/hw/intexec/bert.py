"""A BERT-family encoder (e.g. `minilm-l6`) as an integer-only program.

Per layer, with every tensor an integer at a static scale calibrated on real text (the
context and the GELU output also get per-token power-of-two scales on top, `per_token=True`):
q, k, v = int8 projections; scores = q k^T in int32 (1/sqrt(d_head) folded into the softmax's
input scale); probabilities = integer softmax (uint8, scale 2^-8); context = probabilities x v,
requantized to int8; the output projection lands in int16 at the residual sum's scale, the
residual is added there, and integer LayerNorm brings it back to int8; the FFN is int8 ->
i-GELU -> int8 -> int16 residual -> LayerNorm. Each LayerNorm has two outputs from one
normalisation: int16 for the residual path, and int8 for the GEMMs after it, with outlier
channels smoothed (SmoothQuant: divided in the LayerNorm's gamma and beta, multiplied into the
GEMM weights' columns). Embeddings are int16 tables at one shared scale, summed and
normalised in integers. Only the tokenizer, the table lookup and the final
dequantisation (for pooling on the host) are outside the integer datapath.

Weight bits: every GEMM's weights are int8 (symmetric, per output channel) unless
`weight_bits` gives a linear fewer, by the name `runtime.parts.quantizable_parts` gives it
(`layers.2.attention.self.query`, `layers.2.output.dense`); the embedding tables stay int16.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mfmaccel.compress.calibration import RangeRecorder, record_ranges
from mfmaccel.errors import UserInputError
from mfmaccel.hw.intexec.linear import (
    DEFAULT_INPUTS,
    INT16,
    MASKED,
    WEIGHT_BITS,
    IntLinear,
    ProductInputs,
    checked_weight_bits,
    gemm_input_scale,
    product_inputs,
    requantize_into,
    score_softmax,
    smoothing,
)
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
    residual_add,
    rounding_shift,
)
from mfmaccel.hw.intops.activations import PROBABILITY_BITS
from mfmaccel.runtime.anatomy import linear_layers


@dataclass(frozen=True)
class IntAttention:
    query: IntLinear
    key: IntLinear
    value: IntLinear
    heads: int
    exp: IExp
    context: Dyadic  # probabilities x v -> the context into the output projection
    rescale: Dyadic | None  # scores -> the exp's input scale, when theirs is too fine or coarse
    probability_bits: int = PROBABILITY_BITS

    @classmethod
    def build(cls, projections: Sequence[nn.Linear], scale_in: float,
              scales: tuple[float, float, float], s_ctx: float, *, heads: int,
              smoothing: torch.Tensor | None = None,
              inputs: ProductInputs = DEFAULT_INPUTS,
              weight_bits: Sequence[int] = (WEIGHT_BITS,) * 3) -> IntAttention:
        """From the float q, k, v projections, their output scales and the context's; q, k
        and v land in `inputs.signed`, the probabilities in `inputs.probability_bits`;
        `weight_bits`: the q, k and v weights' bits."""
        query = projections[0]
        s_q, s_k, s_v = scales
        exp, rescale = score_softmax(s_q * s_k / math.sqrt(query.out_features // heads))
        built = [IntLinear.build(linear, scale_in, scale, out=inputs.signed, smoothing=smoothing,
                                 weight_bits=bits)
                 for linear, scale, bits in zip(projections, scales, weight_bits, strict=True)]
        return cls(*built, heads, exp,
                   dyadic(s_v / 2**inputs.probability_bits / s_ctx), rescale,
                   inputs.probability_bits)

    def __call__(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, _ = h.shape

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, length, self.heads, -1).transpose(1, 2)

        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        scores = check_range(exact_matmul(q, k.transpose(-1, -2)), INT32, "attention scores")
        if self.rescale is not None:
            scores = rounding_shift(scores * self.rescale.m, self.rescale.shift)
        scores = scores.masked_fill(~mask[:, None, None, :].bool(), MASKED)
        probs = i_softmax(scores, self.exp, self.probability_bits)
        context = check_range(exact_matmul(probs, v), INT32, "attention context")
        return context.transpose(1, 2).reshape(batch, length, -1)  # int32, before `context`


@dataclass(frozen=True)
class SplitNorm:
    """One LayerNorm with two outputs from one normalisation: int8, divided by the smoothing
    factors, for the GEMMs that follow; int16, exact, for the residual path."""

    to_gemm: ILayerNorm
    to_residual: ILayerNorm
    scale_gemm: float
    scale_residual: float

    def __call__(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normalised = self.to_gemm.normalised(q)
        return self.to_gemm.affine(normalised), self.to_residual.affine(normalised)


def split_norm(layer_norm: nn.LayerNorm, channel_absmax: torch.Tensor, factors: torch.Tensor,
               scale_in: float, out: IntRange = INT8) -> SplitNorm:
    """`out`: the GEMM output's range (int8, or fewer bits: `ProductInputs`)."""
    gamma, beta = layer_norm.weight.detach().double(), layer_norm.bias.detach().double()
    scale_gemm = float((channel_absmax / factors).max()) / out.high
    scale_residual = float(channel_absmax.max()) / INT16.high
    return SplitNorm(
        ILayerNorm.build(gamma / factors, beta / factors, scale_in, scale_gemm,
                         eps=layer_norm.eps, out=out),
        ILayerNorm.build(gamma, beta, scale_in, scale_residual, eps=layer_norm.eps, out=INT16),
        scale_gemm, scale_residual)


@dataclass(frozen=True)
class IntBertLayer:
    attention: IntAttention
    attention_out: IntLinear  # -> int16 at the first residual's scale
    scales: dict[str, float]
    norm1: SplitNorm
    intermediate: IntLinear
    gelu: IGelu
    gelu_out: Dyadic
    output: IntLinear  # -> int16 at the second residual's scale
    norm2: SplitNorm
    per_token: bool  # context and GELU output reach their GEMMs with per-token scales
    inputs: ProductInputs = DEFAULT_INPUTS

    def __call__(self, h8: torch.Tensor, h16: torch.Tensor, mask: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        s, signed = self.scales, self.inputs.signed
        attended = requantize_into(self.attention_out, self.attention(h8, mask),
                                   self.attention.context, self.per_token, signed)
        g8, g16 = self.norm1(residual_add(attended, s["res1"], h16, s["in16"], s["res1"],
                                          out=INT16))
        out = requantize_into(self.output, self.gelu(self.intermediate(g8)), self.gelu_out,
                              self.per_token, signed)
        return self.norm2(residual_add(out, s["res2"], g16, s["h1_16"], s["res2"], out=INT16))


@dataclass(frozen=True)
class IntBert:
    tables: dict[str, torch.Tensor]  # word, position, token_type: int16 at one scale
    embed_norm: SplitNorm
    layers: list[IntBertLayer]
    scale_out: float  # of the final int16 hidden states

    def __call__(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Final hidden states as int16 (multiply by `scale_out` for real values)."""
        positions = torch.arange(input_ids.shape[1])
        summed = (self.tables["word"][input_ids] + self.tables["position"][positions]
                  + self.tables["token_type"][0])
        h8, h16 = self.embed_norm(summed)
        for layer in self.layers:
            h8, h16 = layer(h8, h16, mask)
        return h16


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


def _qkv(layer: nn.Module) -> list[nn.Linear]:
    attention = layer.attention.self
    return [attention.query, attention.key, attention.value]


def _layer(layer: nn.Module, next_layer: nn.Module | None, ranges: RangeRecorder, i: int,
           *, norm_in: SplitNorm, factors_in: torch.Tensor, heads: int, per_token: bool,
           inputs: ProductInputs, bits: Mapping[str, int]) -> tuple[IntBertLayer, torch.Tensor]:
    """Layer `i`'s program; `bits`: weight bits by linear name (`_linear_names`)."""
    bits_of = {id(linear): bits[name] for name, linear in _linear_names(layer, i).items()}
    def s8(name: str) -> float:  # a tensor a product reads
        return ranges.scale(f"{i}.{name}", inputs.signed.high)

    def s16(name: str) -> float:
        return ranges.scale(f"{i}.{name}", INT16.high)

    scale_in = norm_in.scale_gemm
    factors1 = smoothing(ranges.channels[f"{i}.h1"], [layer.intermediate.dense.weight])
    norm1 = split_norm(layer.attention.output.LayerNorm, ranges.channels[f"{i}.h1"], factors1,
                       s16("res1"), inputs.signed)
    consumers = _qkv(next_layer) if next_layer is not None else []
    factors2 = smoothing(ranges.channels[f"{i}.h2"], [c.weight for c in consumers]) \
        if consumers else torch.ones_like(ranges.channels[f"{i}.h2"])
    norm2 = split_norm(layer.output.LayerNorm, ranges.channels[f"{i}.h2"], factors2,
                       s16("res2"), inputs.signed)
    s_ff = ranges.scale(f"{i}.ff")  # the GELU's int8 input, whatever the products read
    gelu = IGelu.build(s_ff)
    s_ctx, s_gelu = (gemm_input_scale(s8(name), per_token) for name in ("ctx", "gelu"))
    int_layer = IntBertLayer(
        attention=IntAttention.build(_qkv(layer), scale_in, (s8("q"), s8("k"), s8("v")), s_ctx,
                                     heads=heads, smoothing=factors_in, inputs=inputs,
                                     weight_bits=[bits_of[id(lin)] for lin in _qkv(layer)]),
        attention_out=IntLinear.build(layer.attention.output.dense, s_ctx, s16("res1"), out=INT16,
                                      weight_bits=bits_of[id(layer.attention.output.dense)]),
        scales={"in16": norm_in.scale_residual, "res1": s16("res1"),
                "h1_16": norm1.scale_residual, "res2": s16("res2")},
        norm1=norm1,
        intermediate=IntLinear.build(layer.intermediate.dense, norm1.scale_gemm, s_ff,
                                     smoothing=factors1,
                                     weight_bits=bits_of[id(layer.intermediate.dense)]),
        gelu=gelu, gelu_out=dyadic(gelu.scale_out / s_gelu),
        output=IntLinear.build(layer.output.dense, s_gelu, s16("res2"), out=INT16,
                               weight_bits=bits_of[id(layer.output.dense)]),
        norm2=norm2, per_token=per_token, inputs=inputs,
    )
    return int_layer, factors2


def _linear_names(layer: nn.Module, i: int) -> dict[str, nn.Linear]:
    """Layer `i`'s linears by the names `weight_bits` keys them with (`layers.<i>.<path>`, as
    `runtime.parts.quantizable_parts` names them)."""
    return {f"layers.{i}.{path}": linear for path, linear in linear_layers(layer).items()}


def linear_names(module: nn.Module) -> list[str]:
    """Every linear of the encoder's layers by the name `weight_bits` keys it with."""
    return [name for i, layer in enumerate(module.encoder.layer)
            for name in _linear_names(layer, i)]


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


def convert_bert(module: nn.Module, batches: Sequence[dict[str, torch.Tensor]],
                 per_token: bool = True, *, activation_bits: int | None = None,
                 weight_bits: Mapping[str, int] | None = None) -> IntBert:
    """Calibrate on `batches` (tokenizer outputs of real text) and build the integer program;
    `per_token`: the context and the GELU output reach their GEMMs with per-token
    power-of-two scales (else static per-tensor ones, like every other tensor);
    `activation_bits`: every tensor a product reads at that many bits (`product_inputs`);
    `weight_bits`: the linears given fewer than 8 weight bits, by name
    (`layers.0.attention.self.query`, ...), the rest at 8."""
    _check_bert(module)
    inputs = product_inputs(activation_bits, per_token)
    bits = checked_weight_bits(weight_bits, linear_names(module),
                               "layers.0.attention.self.query")
    module.eval()
    ranges = record_ranges(module, _taps(module), lambda: (module(**b) for b in batches))
    embeddings = module.embeddings
    tables = {name: getattr(embeddings, f"{name}_embeddings").weight.detach().double()
              for name in ("word", "position", "token_type")}
    table_scale = max(float(t.abs().max()) for t in tables.values()) / ((1 << 14) - 1)
    int_tables = {n: torch.round(t / table_scale).long() for n, t in tables.items()}
    blocks = list(module.encoder.layer)
    factors = smoothing(ranges.channels["embed"], [lin.weight for lin in _qkv(blocks[0])])
    norm = split_norm(embeddings.LayerNorm, ranges.channels["embed"], factors, table_scale,
                      inputs.signed)
    embed_norm, layers = norm, []
    for i, layer in enumerate(blocks):
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        int_layer, factors = _layer(layer, following, ranges, i, norm_in=norm, factors_in=factors,
                                    heads=module.config.num_attention_heads, per_token=per_token,
                                    inputs=inputs, bits=bits)
        layers.append(int_layer)
        norm = int_layer.norm2
    return IntBert(int_tables, embed_norm, layers, norm.scale_residual)


__all__ = ["IntBert", "convert_bert"]

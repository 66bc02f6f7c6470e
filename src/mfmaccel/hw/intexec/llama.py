"""A Llama-family decoder (e.g. `smollm2-135m`) as an integer-only W8A8 program.

Per block, every tensor an integer at a static scale calibrated on real text, except that each
GEMM input gets a per-token power-of-two scale on top (`intops.token_shifts`,
`per_token=True`): RMSNorm (integer, `intops.IRMSNorm`) to int8, outlier channels smoothed
SmoothQuant-style into the GEMMs after it;
q, k, v int8 projections; rotary embedding in integers on q and k (their int8 scale leaves room
for the rotation's sqrt 2); scores q k^T in int32 with 1/sqrt(d) folded into the softmax's input
scale, causal mask, integer softmax, context int8; o_proj into the residual stream, which is
int24 (Llama residuals carry channels hundreds of times larger than the rest: 16 bits would
leave the ordinary channels a few steps); the MLP as int8 gate and up, SiLU from i-exp,
gate x up requantized to int8, down_proj into the residual. The head is an int8 GEMM whose
int16 logits are the program's output. Only the embedding lookup (an int24 table) and the
final multiplication of the logits by their scale happen outside the integer datapath.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from mfmaccel.compress.calibration import RangeRecorder, record_ranges
from mfmaccel.errors import UserInputError
from mfmaccel.hw.intexec.linear import (
    INT16,
    MASKED,
    IntLinear,
    gemm_input_scale,
    requantize_into,
    rows_divided,
    score_softmax,
    smoothing,
)
from mfmaccel.hw.intops import (
    INT8,
    INT32,
    Dyadic,
    IExp,
    IRMSNorm,
    IRotary,
    ISigmoid,
    check_range,
    dyadic,
    exact_matmul,
    i_silu,
    i_softmax,
    requantize,
    residual_add,
    rounding_shift,
    token_shifts,
)
from mfmaccel.hw.intops.activations import EXP_FINEST_SCALE, PROBABILITY_BITS
from mfmaccel.hw.intops.norms import NORM_INPUT

RESIDUAL = NORM_INPUT  # int24: what the integer RMSNorm takes
# SmoothQuant's migration strength for Llama blocks, chosen by perplexity on a validation slice
# of the train half (benchmarks/intexec_smoothing.py); the BERT program keeps SMOOTHING_ALPHA
LLAMA_SMOOTHING = 0.7
SIGMOID_BITS = 15


@dataclass(frozen=True)
class IntLlamaAttention:
    query: IntLinear
    key: IntLinear
    value: IntLinear
    output: IntLinear  # -> the residual stream
    rotary: IRotary
    heads: int
    kv_heads: int
    exp: IExp
    rescale: Dyadic | None  # scores -> the exp's input scale, when theirs is too fine or coarse
    context: Dyadic  # probabilities x v -> the context (int8, or finer for per-token scales)
    per_token: bool  # the context reaches o_proj with per-token power-of-two scales

    def __call__(self, x: torch.Tensor, row_shift: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, _ = x.shape
        positions = torch.arange(length)

        def split(t: torch.Tensor, heads: int) -> torch.Tensor:
            return t.view(batch, length, heads, -1).transpose(1, 2)

        q = INT8.clamp(self.rotary(split(self.query(x, row_shift), self.heads), positions))
        k = INT8.clamp(self.rotary(split(self.key(x, row_shift), self.kv_heads), positions))
        v = split(self.value(x, row_shift), self.kv_heads)
        groups = self.heads // self.kv_heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        scores = check_range(exact_matmul(q, k.transpose(-1, -2)), INT32, "attention scores")
        if self.rescale is not None:
            scores = rounding_shift(scores * self.rescale.m, self.rescale.shift)
        future = torch.ones(length, length, dtype=torch.bool).triu(1)
        probs = i_softmax(scores.masked_fill(future, MASKED), self.exp, PROBABILITY_BITS)
        context = check_range(exact_matmul(probs, v), INT32, "attention context")
        context = context.transpose(1, 2).reshape(batch, length, -1)
        return requantize_into(self.output, context, self.context, self.per_token)


@dataclass(frozen=True)
class IntLlamaMlp:
    gate: IntLinear
    up: IntLinear
    down: IntLinear  # -> the residual stream
    sigmoid: ISigmoid
    product: Dyadic  # silu(gate) x up -> down's input (int8, or finer for per-token scales)
    per_token: bool
    silu_out: Dyadic | None = None  # int16 gate and up: SiLU's output back to int16 first
    sigmoid_shift: int = 0  # the sigmoid sees the gate this many bits coarser (i-exp's range)

    def __call__(self, x: torch.Tensor, row_shift: torch.Tensor | None = None) -> torch.Tensor:
        silu = i_silu(self.gate(x, row_shift), self.sigmoid, self.sigmoid_shift)
        if self.silu_out is not None:
            silu = requantize(silu, self.silu_out, INT16)
        activated = check_range(silu * self.up(x, row_shift), INT32, "SiLU(gate) x up")
        return requantize_into(self.down, activated, self.product, self.per_token)


@dataclass(frozen=True)
class IntLlamaBlock:
    attention_norm: IRMSNorm
    attention: IntLlamaAttention
    mlp_norm: IRMSNorm
    mlp: IntLlamaMlp
    scales: dict[str, float]  # residual stream: in, after attention (mid), out

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        s = self.scales
        mid = residual_add(self.attention(*_normed(self.attention_norm, h)), s["mid"], h,
                           s["in"], s["mid"], out=RESIDUAL)
        return residual_add(self.mlp(*_normed(self.mlp_norm, mid)), s["out"], mid, s["mid"],
                            s["out"], out=RESIDUAL)


def _normed(norm: IRMSNorm, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The norm's int8 output, with per-token shifts when it was built finer (int32 out)."""
    out = norm(h)
    return token_shifts(out) if norm.out is INT32 else (out, None)


@dataclass(frozen=True)
class IntLlama:
    table: torch.Tensor  # token embeddings, int24 at `table_scale`
    table_scale: float
    blocks: list[IntLlamaBlock]
    final_norm: IRMSNorm
    head: IntLinear  # -> int16 logits
    logit_scale: float

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits as int16 integers (multiply by `logit_scale` for real values)."""
        longest = self.blocks[0].attention.rotary.cos.shape[0]
        if input_ids.shape[-1] > longest:
            raise UserInputError(f"{input_ids.shape[-1]} tokens exceed the {longest} the "
                                 "program was built for; convert with a larger max_length")
        h = self.table[input_ids]
        for block in self.blocks:
            h = block(h)
        return self.head(*_normed(self.final_norm, h))


def _taps(module: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    model = module.model
    taps = {"final": (model.norm, "output"), "logits": (module.lm_head, "output")}
    for i, layer in enumerate(model.layers):
        attention, mlp = layer.self_attn, layer.mlp
        taps.update({
            f"{i}.attn_in": (layer.input_layernorm, "output"),
            f"{i}.q": (attention.q_proj, "output"), f"{i}.k": (attention.k_proj, "output"),
            f"{i}.v": (attention.v_proj, "output"), f"{i}.ctx": (attention.o_proj, "input"),
            f"{i}.mid": (layer.post_attention_layernorm, "input"),
            f"{i}.mlp_in": (layer.post_attention_layernorm, "output"),
            f"{i}.gate": (mlp.gate_proj, "output"), f"{i}.up": (mlp.up_proj, "output"),
            f"{i}.act": (mlp.down_proj, "input"), f"{i}.out": (layer, "output"),
        })
    return taps


def _residual_scale(ranges: RangeRecorder, name: str) -> float:
    return ranges.scale(name, RESIDUAL.high)


def _norm(norm: nn.Module, ranges: RangeRecorder, name: str, *, scale_in: float,
          consumers: Sequence[nn.Linear], alpha: float, per_token: bool
          ) -> tuple[IRMSNorm, torch.Tensor, float]:
    """Integer RMSNorm for `consumers`, smoothed: (unit, factors, output scale). To int8, or,
    with `per_token`, to int32 at a 2^TOKEN_HEADROOM finer scale for per-token shifts."""
    channels = ranges.channels[name]
    factors = smoothing(channels, [c.weight for c in consumers], alpha)
    scale_out = gemm_input_scale(float((channels / factors).max()) / INT8.high, per_token)
    weight = norm.weight.detach().double() / factors
    unit = IRMSNorm.build(weight, scale_in, scale_out, eps=norm.variance_epsilon)
    return (replace(unit, out=INT32) if per_token else unit), factors, scale_out


def _attention(attention: nn.Module, ranges: RangeRecorder, i: int, *, scale_in: float,
               factors: torch.Tensor, rotary: IRotary, config, scale_out: float,
               per_token: bool) -> IntLlamaAttention:
    def s8(name: str) -> float:
        return ranges.scale(f"{i}.{name}")

    # after the rotation a pair's element can reach sqrt(2) x the largest input element
    s_q, s_k = s8("q") * math.sqrt(2), s8("k") * math.sqrt(2)
    exp, rescale = score_softmax(s_q * s_k / math.sqrt(attention.head_dim))
    s_ctx = gemm_input_scale(s8("ctx"), per_token)
    return IntLlamaAttention(
        IntLinear.build(attention.q_proj, scale_in, s_q, smoothing=factors),
        IntLinear.build(attention.k_proj, scale_in, s_k, smoothing=factors),
        IntLinear.build(attention.v_proj, scale_in, s8("v"), smoothing=factors),
        IntLinear.build(attention.o_proj, s_ctx, scale_out, out=RESIDUAL),
        rotary, config.num_attention_heads, config.num_key_value_heads,
        exp, rescale, dyadic(s8("v") / 2**PROBABILITY_BITS / s_ctx), per_token)


def _mlp(mlp: nn.Module, ranges: RangeRecorder, i: int, *, scale_in: float,
         factors: torch.Tensor, scale_out: float, alpha: float, per_token: bool,
         wide: bool) -> IntLlamaMlp:
    """gate and up from the smoothed norm; down_proj's input (silu(gate) x up, where Llama's
    largest outliers live) smoothed too: up's output rows divided by the factors, down's
    columns multiplied by them. `wide`: gate and up come out as int16 (256x finer), SiLU's
    output is requantized to int16 at the gate's scale (|silu(x)| <= |x| for x > 0, and
    > -0.28 below), so their product stays within int32."""
    width = INT16 if wide else INT8
    act = smoothing(ranges.channels[f"{i}.act"], [mlp.down_proj.weight], alpha)
    up = rows_divided(mlp.up_proj, act)
    s_gate = ranges.scale(f"{i}.gate", width.high)
    s_up = float((ranges.channels[f"{i}.up"] / act).max()) / width.high
    s_act = gemm_input_scale(float((ranges.channels[f"{i}.act"] / act).max()) / INT8.high,
                             per_token)
    coarser = max(0, math.ceil(math.log2(EXP_FINEST_SCALE / s_gate)))
    sigmoid = ISigmoid.build(s_gate * 2**coarser, SIGMOID_BITS)
    silu_scale = s_gate / 2**SIGMOID_BITS
    silu_out = dyadic(silu_scale / s_gate) if wide else None
    product_scale = (s_gate if wide else silu_scale) * s_up
    return IntLlamaMlp(
        IntLinear.build(mlp.gate_proj, scale_in, s_gate, out=width, smoothing=factors),
        IntLinear.build(up, scale_in, s_up, out=width, smoothing=factors),
        IntLinear.build(mlp.down_proj, s_act, scale_out, out=RESIDUAL, smoothing=act),
        sigmoid, dyadic(product_scale / s_act), per_token, silu_out, coarser)


def check_llama(module: nn.Module) -> None:
    """Refuse what has no integer unit here, naming it."""
    config = getattr(module, "config", None)
    if getattr(config, "model_type", None) not in ("llama", "qwen2", "mistral"):
        raise UserInputError(f"{type(module).__name__} is not a Llama-family decoder; integer "
                             "execution covers Llama-style models (e.g. smollm2-135m)")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise UserInputError(f"activation {config.hidden_act!r} has no integer unit; "
                             "the SiLU unit covers silu")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise UserInputError(f"rotary scaling {rope.get('rope_type')!r} has no integer unit; "
                             "only plain rotary embeddings are covered")


def _rotary(module: nn.Module, length: int) -> IRotary:
    head_dim = module.config.hidden_size // module.config.num_attention_heads
    head_dim = getattr(module.config, "head_dim", None) or head_dim
    probe = torch.zeros(1, length, head_dim)
    cos, sin = module.model.rotary_emb(probe, torch.arange(length)[None])
    return IRotary.build(cos[0], sin[0])


def convert_llama(module: nn.Module, windows: Sequence[torch.Tensor],
                  *, max_length: int = 1024, alpha: float = LLAMA_SMOOTHING,
                  per_token: bool = True, wide_mlp: bool = True) -> IntLlama:
    """Calibrate on `windows` ((1, T) token ids of real text) and build the integer program
    for sequences of up to `max_length` tokens; `alpha` is SmoothQuant's migration strength;
    `per_token`: every GEMM input gets per-token power-of-two scales (else
    static per-tensor ones, like every other tensor)."""
    check_llama(module)
    module.eval()
    ranges = record_ranges(module, _taps(module), lambda: (module(input_ids=w) for w in windows))
    table = module.model.embed_tokens.weight.detach().double()
    table_scale = float(table.abs().max()) / RESIDUAL.high
    rotary = _rotary(module, max_length)
    blocks, scale_in = [], table_scale
    for i, layer in enumerate(module.model.layers):
        attention, mlp = layer.self_attn, layer.mlp
        norm1, factors1, s_attn = _norm(
            layer.input_layernorm, ranges, f"{i}.attn_in", scale_in=scale_in,
            consumers=[attention.q_proj, attention.k_proj, attention.v_proj],
            alpha=alpha, per_token=per_token)
        s_mid, s_out = _residual_scale(ranges, f"{i}.mid"), _residual_scale(ranges, f"{i}.out")
        norm2, factors2, s_mlp = _norm(layer.post_attention_layernorm, ranges, f"{i}.mlp_in",
                                       scale_in=s_mid, consumers=[mlp.gate_proj, mlp.up_proj],
                                       alpha=alpha, per_token=per_token)
        blocks.append(IntLlamaBlock(
            norm1,
            _attention(attention, ranges, i, scale_in=s_attn, factors=factors1, rotary=rotary,
                       config=module.config, scale_out=s_mid, per_token=per_token),
            norm2,
            _mlp(mlp, ranges, i, scale_in=s_mlp, factors=factors2, scale_out=s_out, alpha=alpha,
                 per_token=per_token, wide=wide_mlp),
            {"in": scale_in, "mid": s_mid, "out": s_out}))
        scale_in = s_out
    final_scale = gemm_input_scale(ranges.scale("final"), per_token)
    final = IRMSNorm.build(module.model.norm.weight.detach().double(), scale_in, final_scale,
                           eps=module.model.norm.variance_epsilon)
    final = replace(final, out=INT32) if per_token else final
    logit_scale = ranges.scale("logits", INT16.high)
    head = IntLinear.build(module.lm_head, final_scale, logit_scale, out=INT16)
    return IntLlama(torch.round(table / table_scale).long(), table_scale, blocks, final, head,
                    logit_scale)


__all__ = ["LLAMA_SMOOTHING", "IntLlama", "check_llama", "convert_llama"]

"""An integer Llama-family block (`hw.intexec.llama.IntLlamaBlock`) compiled to the accelerator
top's program, operation for operation as the block computes it: RMSNorm to int32 and the
per-token shift; q, k, v; the rotary embedding per token (its cos and sin copied into the
unit, then every head of q and k at that position); per head (grouped k and v shared) the
scores, the causal softmax and the context; the context's per-token shift; o_proj into the
int24 residual stream and the residual add; RMSNorm again; gate and up (int16), SiLU and its
requantization, gate x up requantized, the per-token shift, down_proj and the second residual.
One sequence from position 0; `convert_llama`'s defaults (per-token scales, int16 gate and
up).
"""

from __future__ import annotations

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intexec.llama import RESIDUAL, IntLlamaBlock
from mfmaccel.hw.intops import INT32, IRMSNorm
from mfmaccel.hw.rtl.config import SIGMOID_BITS
from mfmaccel.hw.rtl.program import DRAM, SPAD, Copy, Vector
from mfmaccel.hw.rtl.top import TopConfig
from mfmaccel.hw.rtl.top_compile import (
    Compiled,
    Plan,
    Region,
    linear,
    norm_rows,
    product,
    residual,
    token_shift,
)


def _rmsnorm(plan: Plan, norm: IRMSNorm, x: Region, rows: int, what: str
             ) -> tuple[Region, Region]:
    """The norm to int32 and its per-token shift: int8 rows and their shifts."""
    if norm.out is not INT32:
        raise UserInputError("the top runs Llama blocks converted with per_token=True "
                             "(convert_llama's default)")
    normed = norm_rows(plan, norm, x=x, rows=rows, width=32, what=what)
    length = norm.gamma.numel()
    shifted = token_shift(plan, normed, rows, length, f"{what} int8")
    plan.release(normed)
    return shifted


def _rotary(plan: Plan, block: IntLlamaBlock, q: Region, k: Region, tokens: int
            ) -> tuple[Region, Region]:
    """q and k rotated, position by position: that position's cos and sin into the unit,
    then its head vectors of q and of k."""
    attention = block.attention
    d, unit = attention.rotary.cos.shape[1], plan.cfg.engine.rotary_dim
    if d != unit:
        raise UserInputError(f"head_dim {d} differs from the rotary unit's {unit}; build the "
                             f"top with head_dim={d}")
    cos = plan.dram(attention.rotary.cos[:tokens])
    sin = plan.dram(attention.rotary.sin[:tokens])
    out = {name: plan.spad(tokens * heads * d, f"rotated {name}")
           for name, heads in (("q", attention.heads), ("k", attention.kv_heads))}
    for position in range(tokens):
        plan.emit(Copy(DRAM, "rotary_cos", 1, d, cos.base + position * d, 0, 1, 0, 0),
                  Copy(DRAM, "rotary_sin", 1, d, sin.base + position * d, 0, 1, 0, 0))
        for name, x, heads in (("q", q, attention.heads), ("k", k, attention.kv_heads)):
            row = position * heads * d
            plan.emit(Vector("rotary", heads, d, x.base + row, d, out[name].base + row, d,
                             constants=(0, 0, 0, 8)))
    return out["q"], out["k"]


def _attention(plan: Plan, block: IntLlamaBlock, x8: Region, shifts: Region,
               tokens: int) -> Region:
    """q, k, v, rotary, then per head the scores, the causal softmax and the context."""
    attention = block.attention
    d = attention.rotary.cos.shape[1]
    q, k, v = (linear(plan, lin, x=x8, rows=tokens, shifts=shifts, what=name)
               for lin, name in ((attention.query, "q"), (attention.key, "k"),
                                 (attention.value, "v")))
    rotated_q, rotated_k = _rotary(plan, block, q, k, tokens)
    plan.release(q, k)
    q, k = rotated_q, rotated_k
    width_q, width_kv = attention.heads * d, attention.kv_heads * d
    scores, probs = plan.spad(tokens * tokens, "scores"), plan.spad(tokens * tokens, "probs")
    context = plan.spad(tokens * width_q, "context")
    # keys after a token stay at probability 0: the causal softmax writes only the others
    zeros = plan.constant(0, tokens * tokens)
    plan.emit(Copy(DRAM, "spad", 1, tokens * tokens, zeros.base, 0, 1, probs.base, 0))
    exp, groups = attention.exp, attention.heads // attention.kv_heads
    for head in range(attention.heads):
        kv = head // groups
        product(plan, a=Region(q.base + head * d, 0), a_row=width_q, rows=tokens, depth=d,
                b=Region(k.base + kv * d, 0), b_row=1, b_col=width_kv, n=tokens,
                factor=attention.rescale, dst=scores.base, dst_row=tokens,
                what="attention scores")
        plan.emit(Vector("causal_softmax", tokens, tokens, scores.base, tokens, probs.base,
                         tokens, constants=(exp.q_ln2, exp.q_b, exp.q_c)))
        product(plan, a=probs, a_row=tokens, rows=tokens, depth=tokens,
                b=Region(v.base + kv * d, 0), b_row=width_kv, b_col=1, n=d,
                factor=attention.context, dst=context.base + head * d, dst_row=width_q,
                what="attention context")
    plan.release(q, k, v, scores, probs)
    return context


def _mlp(plan: Plan, block: IntLlamaBlock, x8: Region, shifts: Region, tokens: int) -> Region:
    mlp = block.mlp
    if mlp.silu_out is None or mlp.sigmoid.out_bits != SIGMOID_BITS:
        raise UserInputError("the top runs Llama MLPs converted with wide_mlp=True "
                             "(convert_llama's default)")
    width = mlp.gate.weight.shape[0]
    gate = linear(plan, mlp.gate, x=x8, rows=tokens, shifts=shifts, what="gate")
    up = linear(plan, mlp.up, x=x8, rows=tokens, shifts=shifts, what="up")
    exp = mlp.sigmoid.exp
    # element-wise and per-token passes write each element after reading it: in place
    plan.emit(
        Vector("silu", tokens, width, gate.base, width, gate.base, width,
               constants=(exp.q_ln2, exp.q_b, exp.q_c, mlp.sigmoid.q_one & 0xFFFF_FFFF,
                          mlp.sigmoid.q_one >> 32, mlp.sigmoid_shift)),
        Vector("requant", tokens, width, gate.base, width, gate.base, width,
               constants=(mlp.silu_out.m, mlp.silu_out.shift, 16)),
        Vector("mul", tokens, width, gate.base, width, gate.base, width, up.base, width,
               constants=(mlp.product.m, mlp.product.shift, 32)))
    plan.release(up)
    act8, act_shifts = token_shift(plan, gate, tokens, width, "down input", in_place=True)
    down = linear(plan, mlp.down, x=act8, rows=tokens, shifts=act_shifts, what="down")
    plan.release(act8, act_shifts)
    return down


def compile_llama_block(cfg: TopConfig, block: IntLlamaBlock, h: torch.Tensor) -> Compiled:
    """The program running `block` on one sequence's int24 residual stream (tokens x hidden,
    positions from 0), and its output `h`."""
    if h.dim() != 2:
        raise UserInputError("give one sequence's residual stream, tokens x hidden")
    tokens, hidden = h.shape
    if tokens > cfg.engine.max_row:
        raise UserInputError(f"{tokens} tokens exceed the softmax unit's max_row; use max_row "
                             f"of at least {tokens}")
    plan = Plan(cfg)
    source, h_in = plan.dram(h), plan.spad(h.numel(), "h")
    plan.emit(Copy(DRAM, "spad", 1, source.size, source.base, 0, 1, h_in.base, 0))
    s = block.scales
    x8, shifts = _rmsnorm(plan, block.attention_norm, h_in, tokens, "attention norm")
    context = _attention(plan, block, x8, shifts, tokens)
    plan.release(x8, shifts)
    ctx8, ctx_shifts = token_shift(plan, context, tokens, context.size // tokens,
                                   "context int8", in_place=True)
    attended = linear(plan, block.attention.output, x=ctx8, rows=tokens, shifts=ctx_shifts,
                      what="o_proj")
    mid = residual(plan, attended, s["mid"], h_in, s["in"], s["mid"], rows=tokens,
                   length=hidden, width=RESIDUAL.bits, what="first residual")
    plan.release(ctx8, ctx_shifts, attended, h_in)
    y8, y_shifts = _rmsnorm(plan, block.mlp_norm, mid, tokens, "MLP norm")
    down = _mlp(plan, block, y8, y_shifts, tokens)
    plan.release(y8, y_shifts)
    out = residual(plan, down, s["out"], mid, s["mid"], s["out"], rows=tokens, length=hidden,
                   width=RESIDUAL.bits, what="second residual")
    target = plan.dram([0] * out.size)
    plan.emit(Copy(SPAD, "dram", 1, out.size, out.base, 0, 1, target.base, 0))
    return plan.finish({"h": (target, (tokens, hidden))})

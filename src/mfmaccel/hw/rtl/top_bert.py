"""An integer BERT layer (`hw.intexec.bert.IntBertLayer`) compiled to the accelerator top's
program (`hw.rtl.program`), operation for operation as the layer computes it: q, k and v;
per head the scores (with the layer's coarsening), the softmax and the context; the
context's per-token shifts; the output projection in int16; the residual add; the LayerNorm's
two outputs (int8 for the GEMM after it, int16 for the residual); the FFN with i-GELU and
per-token shifts; the second residual and LayerNorm. One sequence, every token valid (no
padding), context and GELU output with per-token scales (`convert_bert`'s default).
"""

from __future__ import annotations

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intexec.bert import IntBertLayer, SplitNorm
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


def _split_norm(plan: Plan, norm: SplitNorm, x: Region, rows: int, what: str
                ) -> tuple[Region, Region]:
    return (norm_rows(plan, norm.to_gemm, x=x, rows=rows, width=norm.to_gemm.out.bits,
                      what=f"{what} (int8)"),
            norm_rows(plan, norm.to_residual, x=x, rows=rows, width=norm.to_residual.out.bits,
                      what=f"{what} (int16)"))


def _attention(plan: Plan, layer: IntBertLayer, h8: Region, tokens: int) -> Region:
    """Per head: scores, softmax, context; the int32 context of every head, row-major."""
    attention = layer.attention
    hidden = attention.query.weight.shape[0]
    d = hidden // attention.heads
    if tokens > plan.cfg.engine.max_row:
        raise UserInputError(f"{tokens} tokens exceed the softmax unit's max_row; use "
                             f"max_row of at least {tokens}")
    q, k, v = (linear(plan, lin, x=h8, rows=tokens, shifts=None, what=name)
               for lin, name in ((attention.query, "q"), (attention.key, "k"),
                                 (attention.value, "v")))
    scores, probs = plan.spad(tokens * tokens, "scores"), plan.spad(tokens * tokens, "probs")
    context = plan.spad(tokens * hidden, "context")
    exp = attention.exp
    for head in range(attention.heads):
        product(plan, a=Region(q.base + head * d, 0), a_row=hidden, rows=tokens, depth=d,
                b=Region(k.base + head * d, 0), b_row=1, b_col=hidden, n=tokens,
                factor=attention.rescale, dst=scores.base, dst_row=tokens,
                what="attention scores")
        plan.emit(Vector("softmax", tokens, tokens, scores.base, tokens, probs.base, tokens,
                         constants=(exp.q_ln2, exp.q_b, exp.q_c, 0)))
        product(plan, a=probs, a_row=tokens, rows=tokens, depth=tokens,
                b=Region(v.base + head * d, 0), b_row=hidden, b_col=1, n=d,
                factor=attention.context, dst=context.base + head * d, dst_row=hidden,
                what="attention context")
    plan.release(q, k, v, scores, probs)
    return context


def compile_bert_layer(cfg: TopConfig, layer: IntBertLayer, h8: torch.Tensor,
                       h16: torch.Tensor) -> Compiled:
    """The program running `layer` on one sequence's int8 and int16 hidden states
    (tokens x hidden each), and its outputs `h8` and `h16` (the next layer's inputs)."""
    if not layer.per_token:
        raise UserInputError("the top runs BERT layers converted with per_token=True "
                             "(convert_bert's default)")
    if h8.dim() != 2 or h8.shape != h16.shape:
        raise UserInputError("give one sequence's hidden states, tokens x hidden, int8 and "
                             "int16 alike")
    tokens, hidden = h8.shape
    ffn = layer.intermediate.weight.shape[0]
    plan = Plan(cfg)
    inputs = {name: (plan.dram(x), plan.spad(x.numel(), name)) for name, x in
              (("h8", h8), ("h16", h16))}
    for source, region in inputs.values():
        plan.emit(Copy(DRAM, "spad", 1, source.size, source.base, 0, 1, region.base, 0))
    h8_in, h16_in = inputs["h8"][1], inputs["h16"][1]
    s = layer.scales

    context = _attention(plan, layer, h8_in, tokens)
    plan.release(h8_in)
    ctx8, ctx_shifts = token_shift(plan, context, tokens, hidden, "context int8", in_place=True)
    attended = linear(plan, layer.attention_out, x=ctx8, rows=tokens, shifts=ctx_shifts,
                      what="attention output")
    plan.release(ctx8, ctx_shifts)
    res1 = residual(plan, attended, s["res1"], h16_in, s["in16"], s["res1"], rows=tokens,
                    length=hidden, width=16, what="first residual")
    plan.release(attended, h16_in)
    g8, g16 = _split_norm(plan, layer.norm1, res1, tokens, "first LayerNorm")
    plan.release(res1)

    up = linear(plan, layer.intermediate, x=g8, rows=tokens, shifts=None, what="FFN up")
    plan.release(g8)
    # element-wise and per-token passes write each element after reading it: in place
    plan.emit(Vector("gelu", tokens, ffn, up.base, ffn, up.base, ffn,
                     constants=(layer.gelu.q_b, layer.gelu.q_c, layer.gelu_out.m,
                                layer.gelu_out.shift)))
    f8, f_shifts = token_shift(plan, up, tokens, ffn, "GELU int8", in_place=True)
    down = linear(plan, layer.output, x=f8, rows=tokens, shifts=f_shifts, what="FFN down")
    plan.release(f8, f_shifts)
    res2 = residual(plan, down, s["res2"], g16, s["h1_16"], s["res2"], rows=tokens,
                    length=hidden, width=16, what="second residual")
    plan.release(down, g16)
    out8, out16 = _split_norm(plan, layer.norm2, res2, tokens, "second LayerNorm")

    outputs = {}
    for name, region in (("h8", out8), ("h16", out16)):
        target = plan.dram([0] * region.size)
        plan.emit(Copy(SPAD, "dram", 1, region.size, region.base, 0, 1, target.base, 0))
        outputs[name] = (target, (tokens, hidden))
    return plan.finish(outputs)

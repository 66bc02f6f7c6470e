"""The accelerator top as the performance model sees it (`top_arch`), and the operations of
a traced layer as the top's integer program runs them (`layer_workload`), so `hw.simulate`
can price a layer on the top and be checked against the RTL's cycle counter.

`top_arch` says what the top does that a double-buffered accelerator does not: activations
stay in the scratchpad, and every GEMM's operands and outputs are copied one element per cycle
through the engine's buffers, before and after it computes, B `max_n` columns at a time with
the next chunk's copies beside this chunk's compute (`Arch.operand_fill`, `Arch.fill_chunk`);
the softmax passes over each row three times, the norms and rotary twice, the norms with their
statistics between (`Arch.unit_rows`, from the streaming units' cycle formulas); vector units
take one element per cycle. A layer run as a program of its own loads its inputs and stores
its outputs (`copy` operations). What the model leaves out (`top_layers.unmodelled` counts
each): instruction fetch and decode, the norm and rotary parameters' copies, the GEMM row
shifts' copies, zeroing the causal probabilities, and 2 cycles closing each copy and 1
starting each GEMM.
"""

from __future__ import annotations

from dataclasses import replace

from mfmaccel.errors import UserInputError
from mfmaccel.hw.arch import KIB, Arch
from mfmaccel.hw.ops import Gemm, Op, VectorOp, Workload
from mfmaccel.hw.rtl.gemm import gemm_arch
from mfmaccel.hw.rtl.stream_elementwise import stream_rotary_cycles
from mfmaccel.hw.rtl.stream_norm import stream_layernorm_cycles, stream_rmsnorm_cycles
from mfmaccel.hw.rtl.stream_softmax import stream_softmax_cycles
from mfmaccel.hw.rtl.top import TopConfig

TOP_UNITS = ("softmax", "layernorm", "rmsnorm", "gelu", "silu", "rotary", "add", "requant",
             "token_shift", "copy")
# per-token scales reach these GEMMs' inputs from a row operation (`hw.intexec.bert` and
# `hw.intexec.llama`, per_token=True); the other GEMMs' inputs come from a norm
PER_TOKEN_INPUTS = (".attention.output.dense", ".output.dense", ".o_proj", ".down_proj")


def top_arch(cfg: TopConfig, clock_mhz: float = 100) -> Arch:
    """The top: its engine (`gemm_arch`), a scratchpad, one-element copies and units."""
    e = cfg.engine
    # per row the unit's count plus 1 (`top_cycles`), less its passes over a 1-element row
    softmax_extra = stream_softmax_cycles(e, 1) + 1 - 3
    norm_extra = stream_layernorm_cycles(e, 1) + 1 - 2
    rms_extra = stream_rmsnorm_cycles(e, 1) + 1 - 2
    rotary_extra = stream_rotary_cycles(e) + 1 - 2 * e.rotary_dim
    return replace(gemm_arch(e, clock_mhz), name="rtl-top", vector_lanes=1, units=TOP_UNITS,
                   attention="full", fusion=(), operand_fill=1.0, fill_chunk=e.max_n,
                   bandwidth_gbs=4 * clock_mhz / 1e3,  # one 32-bit word per cycle
                   unit_rows=(("softmax", 3, softmax_extra), ("layernorm", 2, norm_extra),
                              ("rmsnorm", 2, rms_extra), ("rotary", 2, rotary_extra),
                              ("token_shift", 2, 5)),
                   notes=f"the accelerator top ({e.rows}x{e.cols} engine, "
                         f"{cfg.spad_words * 4 / KIB:g} KiB scratchpad)")


def integer_bert_ops(ops: list[Op]) -> list[Op]:
    """A traced BERT layer's operations as its integer program runs them: every LayerNorm
    gives two outputs (int8 for the next GEMM, int16 for the residual: two passes of the
    unit), and the inputs of the attention output and FFN down projections get per-token
    shifts (a token_shift over their rows) first."""
    out: list[Op] = []
    for op in ops:
        if isinstance(op, Gemm) and op.where.endswith(PER_TOKEN_INPUTS):
            out.append(VectorOp("token_shift", op.m, op.k, op.count, op.where))
        out.append(op)
        if isinstance(op, VectorOp) and op.unit == "layernorm":
            out.append(op)
    return out


def integer_llama_ops(ops: list[Op]) -> list[Op]:
    """A traced Llama block's operations as its integer program runs it: each RMSNorm is
    followed by the per-token shift of its int32 output; the adds inside attention are the
    rotary embedding of q and k (one head vector per row); the softmax is causal (row r of a
    head's scores holds r + 1 keys: one row set per key count); SiLU is followed by its
    requantization to int16 (one pass); the GEMMs fed by a row operation get per-token shifts
    first, as in `integer_bert_ops`."""
    out: list[Op] = []
    for op in ops:
        if isinstance(op, Gemm) and op.where.endswith(PER_TOKEN_INPUTS):
            out.append(VectorOp("token_shift", op.m, op.k, op.count, op.where))
        if isinstance(op, VectorOp) and op.unit == "add" and op.where.endswith(".self_attn"):
            out.append(replace(op, unit="rotary"))
        elif isinstance(op, VectorOp) and op.unit == "softmax":
            heads = op.rows // op.length
            out.extend(replace(op, rows=heads, length=keys) for keys in range(1, op.length + 1))
        else:
            out.append(op)
        if isinstance(op, VectorOp) and op.unit == "rmsnorm":
            out.append(VectorOp("token_shift", op.rows, op.length, op.count, op.where))
        if isinstance(op, VectorOp) and op.unit == "silu":
            out.append(replace(op, unit="requant"))
    return out


def layer_workload(workload: Workload, layer: int) -> Workload:
    """One layer of a traced BERT encoder or Llama-family decoder, as its integer program
    runs it (`integer_bert_ops`, `integer_llama_ops`)."""
    bert = [op for op in workload.ops if op.where.startswith(f"encoder.layer.{layer}.")]
    llama = [op for op in workload.ops if op.where == f"model.layers.{layer}"
             or op.where.startswith(f"model.layers.{layer}.")]
    if not (bert or llama):
        raise UserInputError(f"{workload.model} has no layer {layer} the top's model knows "
                             "(BERT encoder or Llama-family decoder layers)")
    ops = integer_bert_ops(bert) if bert else integer_llama_ops(llama)
    # run as a program of its own, the layer loads its inputs and stores its outputs: BERT's
    # int8 and int16 hidden states, Llama's residual stream
    first = next(op for op in ops if isinstance(op, Gemm))
    moved = VectorOp("copy", first.m, first.k, 2 if bert else 1, first.where)
    ops = [moved, *ops, moved]
    return replace(workload, ops=ops,
                   description=f"{workload.description}, layer {layer} (integer program)")

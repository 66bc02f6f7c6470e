"""The accelerator top as the performance model sees it (`top_arch`), and the operations of
an integer BERT layer as the top runs them (`integer_bert_ops`), so `hw.simulate` can price
a traced layer on the top and be checked against the RTL's cycle counter.

`top_arch` says what the top does that a double-buffered accelerator does not: activations
stay in the scratchpad, and every GEMM's operands and outputs are copied one element per cycle
through the engine's buffers, before and after it computes (`Arch.operand_fill`); the softmax
passes over each row three times and the LayerNorm twice with its statistics between
(`Arch.unit_rows`, from the streaming units' cycle formulas); vector units take one element
per cycle. What the model still leaves out: instruction fetch and decode (18 cycles per
instruction), 2 cycles closing each copy and 1 starting each GEMM, the engine started once
per `max_n` output columns, and the copies of the LayerNorm's parameters.
"""

from __future__ import annotations

from dataclasses import replace

from mfmaccel.hw.arch import KIB, Arch
from mfmaccel.hw.rtl.gemm import gemm_arch
from mfmaccel.hw.rtl.stream_norm import stream_layernorm_cycles
from mfmaccel.hw.rtl.stream_softmax import stream_softmax_cycles
from mfmaccel.hw.rtl.top import TopConfig
from mfmaccel.hw.workload import Gemm, Op, VectorOp, Workload

TOP_UNITS = ("softmax", "layernorm", "gelu", "add", "requant", "token_shift")
# per-token scales reach these GEMMs' inputs (`hw.intexec.bert`, per_token=True)
PER_TOKEN_INPUTS = (".attention.output.dense", ".output.dense")


def top_arch(cfg: TopConfig, clock_mhz: float = 100) -> Arch:
    """The top: its engine (`gemm_arch`), a scratchpad, one-element copies and units."""
    e = cfg.engine
    # per row the unit's count plus 1 (`top_cycles`), less its passes over a 1-element row
    softmax_extra = stream_softmax_cycles(e, 1) + 1 - 3
    norm_extra = stream_layernorm_cycles(e, 1) + 1 - 2
    return replace(gemm_arch(e, clock_mhz), name="rtl-top", vector_lanes=1, units=TOP_UNITS,
                   attention="full", fusion=(), operand_fill=1.0,
                   bandwidth_gbs=4 * clock_mhz / 1e3,  # one 32-bit word per cycle
                   unit_rows=(("softmax", 3, softmax_extra), ("layernorm", 2, norm_extra),
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


def layer_workload(workload: Workload, layer: int) -> Workload:
    """One encoder layer of a traced BERT workload, as its integer program runs it."""
    prefix = f"encoder.layer.{layer}."
    ops = [op for op in workload.ops if op.where.startswith(prefix)]
    return replace(workload, ops=integer_bert_ops(ops),
                   description=f"{workload.description}, layer {layer} (integer program)")

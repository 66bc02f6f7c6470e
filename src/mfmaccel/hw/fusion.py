"""Fused schedules: which operations of a workload may share the chip without a round trip
through off-chip memory, and what each schedule then moves off chip.

A workload (`hw.workload`) is a list of operations in execution order. `schedule_units` groups
the ones a fused schedule can take together, folds identical groups into a count (as
`Workload.merged` does for single operations), and leaves the rest as they are:
- `AttentionBlock`: the score product, its softmax and the context product of one attention
  call. Unfused, the int32 scores go off chip, come back for the softmax, whose 16-bit
  probabilities (12 fraction bits, `intops.activations.PROBABILITY_BITS`) go off chip and come
  back for the context product. Fused (FLAT-style, with the online softmax of
  `hw.intops.online_softmax`): per head a block of query rows stays in the A buffer, K and V
  stream through the B buffer one key tile at a time, the running max, sum and accumulator sit
  in the out buffer, and only Q, K, V and the context cross the link; K and V are read once per
  head when both fit the B buffer, else once per query block.
- `MlpBlock`: the GEMMs into an MLP's intermediate (up, and gate for SwiGLU), the element-wise
  operations on it, and the GEMM out of it. Fused: per block of token rows, the rows and their
  whole intermediate stay in the A buffer, so the intermediate never leaves the chip; the
  weights are read once when they all fit the B buffer, else once per row block.
- Element-wise operations alone: `VECTOR_DRAM_BYTES` says what each moves unfused (a pass that
  reads its operands and writes its result) and fused into the epilogue of the GEMM before it
  (an activation on the outputs before they leave; a residual add reads only the other operand
  and its sum replaces the GEMM's output; a norm computes its row statistics on the output rows
  on chip and writes the normalised copy beside the residual stream).

The simulator (`hw.simulate`) prices both forms of a block and keeps the one with fewer
off-chip bytes (then fewer cycles), so a fused schedule is only ever taken where it pays;
`Arch.fusion` says which fused schedules the hardware has at all.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace

from mfmaccel.hw.arch import Arch
from mfmaccel.hw.dataflow import ACT_BYTES, PSUM_BYTES
from mfmaccel.hw.intops.online_softmax import attention_state_bytes, untiled_score_bytes
from mfmaccel.hw.ops import Gemm, Op, VectorOp, Workload

PROBABILITY_BYTES = 2  # 12-bit softmax probabilities, stored in 16 bits
SCORE_BYTES = PSUM_BYTES  # int32 scores

# unit: (fusion kind that removes the pass, off-chip bytes per element unfused, fused)
VECTOR_DRAM_BYTES: dict[str, tuple[str, float, float]] = {
    "layernorm": ("norm", 2, 1), "rmsnorm": ("norm", 2, 1), "add": ("norm", 3, 1),
    "gelu": ("activation", 2, 0), "silu": ("activation", 2, 0),
    "rotary": ("activation", 2, 0), "softmax": ("attention", 2, 0),
}


@dataclass(frozen=True)
class AttentionBlock:
    """One attention call: scores, softmax, context; `count` identical calls."""

    score: Gemm
    softmax: VectorOp
    context: Gemm
    count: int = 1

    @property
    def ops(self) -> tuple[Op, ...]:
        return (self.score, self.softmax, self.context)


@dataclass(frozen=True)
class MlpBlock:
    """One MLP: the GEMMs into the intermediate, the element-wise operations on it, the GEMM out
    of it (last); `count` identical MLPs."""

    ops: tuple[Op, ...]
    count: int = 1

    @property
    def gemms(self) -> list[Gemm]:
        return [op for op in self.ops if isinstance(op, Gemm)]


Unit = Gemm | VectorOp | AttentionBlock | MlpBlock


@dataclass(frozen=True)
class FusedTraffic:
    """What a fused schedule moves off chip: bytes per operation of one block (all heads), in
    the block's order; extra 32-bit multiplies (the online softmax's rescaling); a description
    of the tiling for the report."""

    dram_bytes: tuple[float, ...]
    detail: str
    extra_mults: int = 0


def vector_dram_bytes(unit: str, arch: Arch) -> float:
    """Off-chip bytes per element of an element-wise operation on `arch` (fused where the arch
    has the schedule that takes it)."""
    kind, unfused, fused = VECTOR_DRAM_BYTES.get(unit, ("", 0, 0))
    return fused if arch.fuses(kind) else unfused


def schedule_units(workload: Workload) -> list[Unit]:
    """The workload as blocks a fused schedule can take and single operations, identical ones
    folded into one with a count (origins dropped: same totals, fewer to price)."""
    found: list[Unit] = []
    i = 0
    while i < len(workload.ops):
        unit, used = _attention_at(workload.ops, i) or _mlp_at(workload.ops, i) or (
            workload.ops[i], 1)
        found.append(unit)
        i += used
    counts: Counter[Unit] = Counter()
    for unit in found:
        key = _anonymous(unit)
        counts[replace(key, count=1)] += key.count
    return [replace(unit, count=n) for unit, n in counts.items()]


def _anonymous(unit: Unit) -> Unit:
    """The unit with every operation's origin dropped and its count in the unit."""
    if isinstance(unit, (Gemm, VectorOp)):
        return replace(unit, where="")
    ops = [replace(op, where="", count=1) for op in unit.ops]
    if isinstance(unit, AttentionBlock):
        return AttentionBlock(*ops, count=unit.count * unit.score.count)
    return MlpBlock(tuple(ops), count=unit.count * unit.ops[0].count)


def _attention_at(ops: list[Op], i: int) -> tuple[AttentionBlock, int] | None:
    """Scores, their softmax and the context product, in that order and of matching shapes."""
    if i + 2 >= len(ops):
        return None
    score, softmax, context = ops[i:i + 3]
    if not (isinstance(score, Gemm) and score.role == "attention-score"
            and isinstance(softmax, VectorOp) and softmax.unit == "softmax"
            and isinstance(context, Gemm) and context.role == "attention-context"):
        return None
    rows_match = softmax.rows == score.m * score.batch and softmax.length == score.n
    if not rows_match or (context.m, context.k, context.batch) != (score.m, score.n, score.batch):
        return None
    if len({score.count, softmax.count, context.count}) != 1:
        return None
    return AttentionBlock(score, softmax, context), 3


def _mlp_at(ops: list[Op], i: int) -> tuple[MlpBlock, int] | None:
    """An FFN GEMM into an intermediate, the element-wise operations on it (at least the
    activation) and any further GEMMs into it (SwiGLU's up beside its gate), then the FFN GEMM
    that reads it back: its K divides the intermediate's size. Matched by shapes, not module
    names (BERT's MLP spans two modules)."""
    first = ops[i]
    if not _weight_gemm(first):
        return None
    inner, j = _elements(first), i + 1
    while j < len(ops) and (
            (isinstance(ops[j], VectorOp) and ops[j].rows * ops[j].length == inner)
            or (_weight_gemm(ops[j]) and _elements(ops[j]) == inner and ops[j].k == first.k)):
        j += 1
    if j == len(ops) or not _weight_gemm(ops[j]) or inner % ops[j].k:
        return None
    block = ops[i:j + 1]
    if not any(isinstance(op, VectorOp) for op in block) or len({op.count for op in block}) > 1:
        return None
    return MlpBlock(tuple(block)), j + 1 - i


def _weight_gemm(op: Op) -> bool:
    """An FFN GEMM with a weight, one product per call."""
    return isinstance(op, Gemm) and op.role == "ffn" and bool(op.weight_bits) and op.batch == 1


def _elements(gemm: Gemm) -> int:
    """Output elements of one of the product's `batch` x `count` repeats, times batch."""
    return gemm.m * gemm.n * gemm.batch


def _row_block(arch: Arch, rows: int, per_row: float, budget: int) -> int:
    """The largest multiple of the array's rows (at most `rows` rounded up) whose `per_row`
    bytes each fit `budget`; 0 when not even one array edge of rows fits."""
    top = math.ceil(rows / arch.rows) * arch.rows
    return min(top, int(budget // per_row) // arch.rows * arch.rows)


def attention_query_block(arch: Arch, block: AttentionBlock) -> int:
    """Query rows one pass of the fused schedule keeps: their Q rows in the A buffer, and in
    the out buffer either the online softmax's state and one key tile of scores ("tiled") or
    whole int32 score rows and the context accumulator ("full"). 0: nothing fits."""
    score, context = block.score, block.context
    keys, dim, dim_v = score.n, score.k, context.n
    if arch.attention == "tiled":
        per_row = attention_state_bytes(1, dim_v, min(keys, arch.cols))
    else:
        per_row = untiled_score_bytes(1, keys) + dim_v * PSUM_BYTES
    out_rows = _row_block(arch, score.m, per_row, arch.buffer_bytes("out"))
    return min(out_rows, _row_block(arch, score.m, dim * ACT_BYTES, arch.buffer_bytes("a")))


def fused_attention(arch: Arch, block: AttentionBlock) -> FusedTraffic | None:
    """Off-chip bytes of the fused schedule (scores never leave the chip), or None when one
    array edge of query rows cannot keep its state on chip."""
    score, context = block.score, block.context
    heads, queries, keys, dim, dim_v = score.batch, score.m, score.n, score.k, context.n
    rows = attention_query_block(arch, block)
    if rows < 1:
        return None
    kv_bytes = keys * (dim + dim_v) * ACT_BYTES
    kv_reads = 1 if kv_bytes <= arch.buffer_bytes("b") else math.ceil(queries / rows)
    q_and_k = heads * (queries * dim + keys * dim * kv_reads) * ACT_BYTES
    v_and_out = heads * (keys * dim_v * kv_reads + queries * dim_v) * ACT_BYTES
    tile = min(keys, arch.cols) if arch.attention == "tiled" else keys
    rescales = heads * queries * dim_v * (math.ceil(keys / tile) - 1)
    detail = (f"fused attention: {rows} query rows, key tiles of {tile}, K/V read "
              f"{'once' if kv_reads == 1 else f'{kv_reads}x'} per head")
    return FusedTraffic((q_and_k, 0.0, v_and_out), detail, rescales)


def unfused_attention_bytes(block: AttentionBlock) -> float:
    """What the unfused form moves beyond the fused one's Q, K, V and context, at best: the
    scores out and back, the probabilities out and back."""
    scores = block.score.m * block.score.n * block.score.batch
    return scores * 2 * (SCORE_BYTES + PROBABILITY_BYTES)


def fused_mlp(arch: Arch, block: MlpBlock) -> FusedTraffic | None:
    """Off-chip bytes of the MLP with its intermediate held on chip per block of token rows, or
    None when one array edge of rows and their intermediate do not fit the A buffer."""
    gemms = block.gemms
    ups, down = gemms[:-1], gemms[-1]
    width = down.k
    tokens = _elements(ups[0]) // width
    hidden = ups[0].k
    rows = _row_block(arch, tokens, (hidden + width) * ACT_BYTES, arch.buffer_bytes("a"))
    if rows < 1:
        return None
    def weight_bytes(gemm: Gemm) -> float:
        return gemm.k * (_elements(gemm) // tokens) * gemm.weight_bits / 8

    total = sum(weight_bytes(g) for g in gemms)
    reads = 1 if total <= arch.buffer_bytes("b") else math.ceil(tokens / rows)
    last = len(block.ops) - 1
    traffic = [0.0 if not isinstance(op, Gemm) else weight_bytes(op) * reads
               for op in block.ops]
    traffic[0] += tokens * hidden * ACT_BYTES  # the MLP's input rows, read once
    traffic[last] += _elements(down) * ACT_BYTES  # its output, written once
    detail = (f"fused mlp: {rows} token rows, intermediate {width} on chip, weights read "
              f"{'once' if reads == 1 else f'{reads}x'}")
    return FusedTraffic(tuple(traffic), detail)

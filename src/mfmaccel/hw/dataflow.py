"""Mapping one GEMM onto the MAC array: which operand stays where (output- or weight-
stationary), how large a block of it the buffers keep, and what that costs in cycles, on-chip
bytes and off-chip bytes. `map_gemm` tries every dataflow the architecture has and every
blocking that fits, and keeps the one with the least off-chip traffic (off-chip bytes dominate
energy), then the fewest cycles.

Cycle counts per array fold:
- output-stationary, broadcast array (our RTL `hw.rtl.gemm`, SwiftTron): a bias load, K
  rank-1 updates, then R requantized rows read out one per cycle: 1 + K + R; one start cycle
  per GEMM. This is the RTL's count exactly (`hw.rtl.gemm.gemm_cycles`, checked against its
  simulation in the tests).
- weight-stationary, broadcast: R cycles to load an R x C weight tile, one A row per cycle
  through it, one cycle to drain the adder trees: R + rows + 1.
- systolic arrays (SCALE-Sim 3.0's count, reproduced exactly by benchmarks/scalesim_runner.py):
  operands enter skewed; an output-stationary fold costs R + C + K - 2, a weight-stationary
  one 2R + C + rows - 2 (R more to load the weights); no start cycle. SCALE-Sim reports the
  index of the last cycle, one less than this count.

Off-chip traffic assumes double-buffered tiles (loads overlap compute), int8 activations,
weights at their stored bits, int8 outputs after requantization, and int32 partial sums that
never leave the chip (a blocking that would need that is not chosen).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mfmaccel.errors import UserInputError
from mfmaccel.hw.arch import KIB, Arch

PSUM_BYTES = 4  # int32 partial sums
ACT_BYTES = 1  # int8 activations and outputs


@dataclass(frozen=True)
class GemmShape:
    """One (m x k) @ (k x n) product; `w_bytes` per element of B (weights at their bits, or 1
    for an activation operand); `a_on_chip` / `out_on_chip`: the operand never comes from, or
    goes to, off-chip memory (attention probabilities and scores); `a_bytes` / `out_bytes` per
    element of A and of the output where they do (an unfused attention's int32 scores and
    16-bit probabilities)."""

    m: int
    n: int
    k: int
    w_bytes: float = 1.0
    a_on_chip: bool = False
    out_on_chip: bool = False
    a_bytes: float = ACT_BYTES
    out_bytes: float = ACT_BYTES


@dataclass(frozen=True)
class GemmMapping:
    dataflow: str  # "os" or "ws"
    block: str  # which block of which operand the buffers keep, for the report
    compute_cycles: int
    dram_bytes: float
    sram_bytes: float  # bytes read from and written to the on-chip buffers


def fold_cycles(arch: Arch, dataflow: str, streamed: int) -> int:
    """Cycles of one array fold that streams `streamed` rows (K for os, A rows for ws)."""
    r, c = arch.rows, arch.cols
    if arch.interconnect == "systolic":
        return (r if dataflow == "os" else 2 * r) + c + streamed - 2
    return 1 + streamed + r if dataflow == "os" else r + streamed + 1


def start_cycles(arch: Arch) -> int:
    """The broadcast engine's controller takes one cycle to accept `start`."""
    return 1 if arch.interconnect == "broadcast" else 0


def os_cycles(arch: Arch, m: int, n: int, k: int) -> int:
    """Output-stationary cycles of one GEMM: the start, then one fold per R x C tile."""
    tiles = math.ceil(m / arch.rows) * math.ceil(n / arch.cols)
    return start_cycles(arch) + tiles * fold_cycles(arch, "os", k)


def ws_cycles(arch: Arch, m_block: int, m: int, n: int, k: int) -> int:
    """Weight-stationary cycles: per block of `m_block` A rows, one fold per R x C weight tile."""
    folds = math.ceil(k / arch.rows) * math.ceil(n / arch.cols)
    full, rest = divmod(m, m_block)
    per_block = full * folds * fold_cycles(arch, "ws", m_block)
    return start_cycles(arch) + per_block + (folds * fold_cycles(arch, "ws", rest) if rest else 0)


def check_fits(arch: Arch, shape: GemmShape) -> None:
    """The smallest tiles any mapping needs: one R x C block of partial sums, one column of A
    and one row of B per array edge. Errors name the buffer and the size that would work."""
    need = {"out": arch.rows * arch.cols * PSUM_BYTES, "a": arch.rows * ACT_BYTES,
            "b": math.ceil(arch.cols * shape.w_bytes)}
    for which, size in need.items():
        if arch.buffer_bytes(which) < size:
            raise UserInputError(
                f"arch {arch.name}: {which}_buffer_kib={getattr(arch, f'{which}_buffer_kib')} "
                f"cannot hold one {arch.rows}x{arch.cols} array tile; the smallest that works "
                f"is {size / KIB:g} KiB")


def map_gemm(arch: Arch, shape: GemmShape) -> GemmMapping:
    """The cheapest mapping over the architecture's dataflows (least off-chip traffic, then
    fewest cycles)."""
    check_fits(arch, shape)
    options = []
    if "os" in arch.dataflows:
        options += _os_mappings(arch, shape)
    if "ws" in arch.dataflows:
        options += _ws_mappings(arch, shape)
    return min(options, key=lambda o: (o.dram_bytes, o.compute_cycles))


def _traffic(shape: GemmShape, a_reads: float, b_reads: float) -> float:
    """Off-chip bytes when A is read `a_reads` times and B `b_reads` times, outputs once."""
    a = 0 if shape.a_on_chip else shape.m * shape.k * shape.a_bytes * a_reads
    b = shape.k * shape.n * shape.w_bytes * b_reads
    out = 0 if shape.out_on_chip else shape.m * shape.n * shape.out_bytes
    return a + b + out


def _blocks(size: int, step: int, limit: int) -> int:
    """The largest multiple of `step` (at most `size` rounded up to one) within `limit`."""
    return min(math.ceil(size / step) * step, (limit // step) * step)


def _os_mappings(arch: Arch, s: GemmShape) -> list[GemmMapping]:
    """Output-stationary: the array keeps an R x C tile of outputs while A rows and B columns
    stream through. Either a block of A rows (all of K) stays in the A buffer while all of B
    streams past it, or a block of B columns stays while A streams; or K is split and both
    operands are re-read once per output block held as partial sums in the out buffer (the only
    option when neither block fits, and sometimes less traffic than both: ZigZag's mapper found
    such a blocking of smollm2's MLP down-projection, benchmarks/zigzag_crosscheck.py)."""
    r, c = arch.rows, arch.cols
    a_buf, b_buf, out_buf = (arch.buffer_bytes(x) for x in ("a", "b", "out"))
    tiles = math.ceil(s.m / r) * math.ceil(s.n / c)
    cycles = os_cycles(arch, s.m, s.n, s.k)
    sram = tiles * (r * s.k * ACT_BYTES + s.k * c * s.w_bytes + r * c * ACT_BYTES)
    found = []
    bm = _blocks(s.m, r, int(a_buf // max(s.k * s.a_bytes, 1)))
    if bm >= r and s.k * c * s.w_bytes <= b_buf:
        dram = _traffic(s, 1, math.ceil(s.m / bm))
        found.append(GemmMapping("os", f"A rows {bm} x K {s.k}", cycles, dram, sram + dram))
    bn = _blocks(s.n, c, int(b_buf // max(s.k * s.w_bytes, 1)))
    if bn >= c and r * s.k * s.a_bytes <= a_buf:
        dram = _traffic(s, math.ceil(s.n / bn), 1)
        found.append(GemmMapping("os", f"B cols {bn} x K {s.k}", cycles, dram, sram + dram))
    if found and min(o.dram_bytes for o in found) <= _traffic(s, 1, 1):
        return found  # every operand once already: no split can move less
    try:  # K split: an output block held as partial sums; sometimes less traffic than both
        found.append(_split_k(arch, s, cycles, sram, out_buf))
    except UserInputError:
        if not found:
            raise
    return found


def _split_k(arch: Arch, s: GemmShape, cycles: int, sram: float, out_buf: int) -> GemmMapping:
    """K in chunks: the largest output block whose int32 partial sums fit the out buffer,
    squarest first (fewest re-reads of A and B together)."""
    r, c = arch.rows, arch.cols
    best = None
    for bm in _candidates(s.m, r):
        bn = _blocks(s.n, c, out_buf // (bm * PSUM_BYTES))
        if bn < c:
            continue
        kc = min(s.k, arch.buffer_bytes("a") // (bm * ACT_BYTES),
                 int(arch.buffer_bytes("b") // (bn * s.w_bytes)))
        if kc < 1:
            continue
        dram = _traffic(s, math.ceil(s.n / bn), math.ceil(s.m / bm))
        psums = 2 * s.m * s.n * PSUM_BYTES * (math.ceil(s.k / kc) - 1)
        option = GemmMapping("os", f"out {bm}x{bn}, K chunks of {kc}", cycles, dram,
                             sram + dram + psums)
        if best is None or option.dram_bytes < best.dram_bytes:
            best = option
    if best is None:
        raise UserInputError(f"arch {arch.name}: no blocking of a {s.m}x{s.k} @ {s.k}x{s.n} "
                             f"GEMM fits; raise out_buffer_kib to at least "
                             f"{r * c * PSUM_BYTES / KIB:g}")
    return best


def _candidates(size: int, step: int) -> list[int]:
    """Block sizes to try: one array edge times powers of two, and the whole dimension."""
    top = math.ceil(size / step) * step
    sizes, block = {top}, step
    while block < top:
        sizes.add(block)
        block *= 2
    return sorted(sizes)


def _ws_mappings(arch: Arch, s: GemmShape) -> list[GemmMapping]:
    """Weight-stationary: an R x C tile of B sits in the array while a block of A rows streams
    through; the block's int32 partial sums (rows x C) wait in the out buffer across K folds.
    B is read once if it fits the B buffer whole, else once per block of A rows; A once if a
    block's rows (all of K) fit the A buffer, else once per column tile."""
    r, c = arch.rows, arch.cols
    out_buf = arch.buffer_bytes("out")
    bm = min(s.m, out_buf // (c * PSUM_BYTES))
    blocks = math.ceil(s.m / bm)
    b_whole = s.k * s.n * s.w_bytes <= arch.buffer_bytes("b")
    a_whole = bm * s.k * ACT_BYTES <= arch.buffer_bytes("a")
    dram = _traffic(s, 1 if a_whole else math.ceil(s.n / c), 1 if b_whole else blocks)
    folds = math.ceil(s.k / r) * math.ceil(s.n / c)
    sram = (blocks * folds * r * c * s.w_bytes  # weight tiles into the array
            + folds * s.m * r * ACT_BYTES  # A rows through it
            + (2 * math.ceil(s.k / r) - 1) * s.m * s.n * PSUM_BYTES)  # partial sums
    cycles = ws_cycles(arch, bm, s.m, s.n, s.k)
    return [GemmMapping("ws", f"A rows {bm} per weight tile", cycles, dram, sram + dram)]

"""What every compiler to the accelerator top (`hw.rtl.top`) shares: the memory plan (regions of
off-chip memory and of the scratchpad), and the instruction sequences for an integer linear
layer (`hw.intexec.linear.IntLinear`) and a GEMM between two activations.

A compiled layer is a `Compiled`: the program, the off-chip memory image it expects (weights,
biases, multipliers, norm parameters, constants, inputs, the program itself) and where its
outputs land in off-chip memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intexec.linear import IntLinear
from mfmaccel.hw.intops import Dyadic, ILayerNorm, IRMSNorm
from mfmaccel.hw.intops.datapath import residual_factors
from mfmaccel.hw.rtl.program import (
    DRAM,
    SPAD,
    WORDS,
    Copy,
    End,
    Gemm,
    Instruction,
    Vector,
    encode,
)
from mfmaccel.hw.rtl.top import TopConfig


@dataclass(frozen=True)
class Region:
    base: int
    size: int


@dataclass
class Compiled:
    """A program for the top, the off-chip image it runs on, and where to read its results."""

    program: list[Instruction]
    image: dict[int, list[int]]  # off-chip word address -> the words from there
    program_base: int
    outputs: dict[str, tuple[Region, tuple[int, ...]]]  # name -> (where, tensor shape)
    dram_words: int  # off-chip words the image reaches
    spad_words: int  # scratchpad words the program uses (its high-water mark)


@dataclass
class Plan:
    """Bump allocation of off-chip memory and the scratchpad, and the program being built."""

    cfg: TopConfig
    image: dict[int, list[int]] = field(default_factory=dict)
    program: list[Instruction] = field(default_factory=list)
    dram_next: int = 0
    spad_next: int = 0  # the scratchpad's high-water mark
    spad_free: list[Region] = field(default_factory=list)  # released, by address
    constants: dict[tuple[int, int], Region] = field(default_factory=dict)

    def dram(self, values: torch.Tensor | list[int]) -> Region:
        """`values` (flattened, integers) placed in off-chip memory."""
        words = [int(v) for v in (values.reshape(-1).tolist() if isinstance(values, torch.Tensor)
                                  else values)]
        region = Region(self.dram_next, len(words))
        self.image[region.base] = words
        self.dram_next += len(words)
        return region

    def constant(self, value: int, size: int) -> Region:
        """`size` words of `value` in off-chip memory, shared by everyone asking for them."""
        have = [(v, n) for v, n in self.constants if v == value and n >= size]
        if have:
            return self.constants[have[0]]
        region = self.dram([value] * size)
        self.constants[(value, size)] = region
        return region

    def spad(self, size: int, what: str) -> Region:
        """`size` words of the scratchpad: the first released gap that holds them, else
        above everything allocated so far."""
        for i, gap in enumerate(self.spad_free):
            if gap.size >= size:
                rest = Region(gap.base + size, gap.size - size)
                self.spad_free[i:i + 1] = [rest] if rest.size else []
                return Region(gap.base, size)
        region = Region(self.spad_next, size)
        self.spad_next += size
        if self.spad_next > self.cfg.spad_words:
            raise UserInputError(f"the program needs a scratchpad of at least {self.spad_next} "
                                 f"words ({what} does not fit); raise spad_words (now "
                                 f"{self.cfg.spad_words})")
        return region

    def release(self, *regions: Region) -> None:
        """Scratchpad regions no later instruction reads: free for the next allocations
        (adjacent gaps merged)."""
        gaps = sorted([*self.spad_free, *regions], key=lambda r: r.base)
        merged: list[Region] = []
        for gap in gaps:
            if merged and merged[-1].base + merged[-1].size == gap.base:
                merged[-1] = Region(merged[-1].base, merged[-1].size + gap.size)
            else:
                merged.append(gap)
        self.spad_free = merged

    def emit(self, *instructions: Instruction) -> None:
        self.program.extend(instructions)

    def finish(self, outputs: dict[str, tuple[Region, tuple[int, ...]]]) -> Compiled:
        """The program (ended) placed after the data."""
        self.emit(End())
        words = [w for instruction in self.program for w in encode(instruction)]
        base = self.dram_next
        self.image[base] = words
        self.dram_next += len(words)
        if self.dram_next > self.cfg.dram_words:
            raise UserInputError(f"the program and its data need {self.dram_next} off-chip "
                                 f"words; raise dram_words (now {self.cfg.dram_words})")
        return Compiled(self.program, self.image, base, outputs, self.dram_next,
                        self.spad_next)


def check_gemm_fits(cfg: TopConfig, m: int, k: int, what: str) -> None:
    e = cfg.engine
    if m > e.max_m:
        raise UserInputError(f"{what}: {m} rows of A exceed the engine's max_m; use max_m of "
                             f"at least {m}")
    if k > e.max_k:
        raise UserInputError(f"{what}: depth {k} exceeds the engine's max_k; use max_k of at "
                             f"least {k}")


def gemm_chunks(plan: Plan, *, n: int, k: int, weights: Region, w_row: int, w_col: int,
                bias: Region, multipliers: Region, shift: int, width: int, m: int,
                dst: int, dst_row: int, weights_from: int = DRAM) -> None:
    """B (K x N, element (kk, j) at weights.base + kk w_row + j w_col) through the engine
    `max_n` columns at a time, A already in its buffer: per chunk, B, the bias and the
    multipliers copied in, the GEMM run, its outputs written to dst + i dst_row + j. With
    several chunks the engine's two banks overlap them: chunk j + 1's copies run while the
    engine computes chunk j (`start`), whose outputs are copied after (`finish`)."""
    max_n = plan.cfg.engine.max_n
    chunks = [(j0, min(max_n, n - j0)) for j0 in range(0, n, max_n)]

    def fill(j0: int, cols: int) -> None:
        plan.emit(
            Copy(weights_from, "gemm_b", k, cols, weights.base + j0 * w_col, w_row, w_col, 0,
                 max_n),
            Copy(DRAM, "gemm_bias", 1, cols, bias.base + j0, 0, 1, 0, 0),
            Copy(DRAM, "gemm_m", 1, cols, multipliers.base + j0, 0, 1, 0, 0))

    def run(j0: int, cols: int, mode: str) -> Gemm:
        return Gemm(m, cols, k, shift, width, dst + j0, dst_row, mode)

    if len(chunks) == 1:
        fill(*chunks[0])
        plan.emit(run(*chunks[0], "run"))
        return
    fill(*chunks[0])
    plan.emit(run(*chunks[0], "start"))
    for previous, chunk in zip(chunks, chunks[1:], strict=False):
        fill(*chunk)
        plan.emit(run(*previous, "finish"), run(*chunk, "start"))
    plan.emit(run(*chunks[-1], "finish"))


def load_a(plan: Plan, *, rows: int, cols: int, src: int, src_row: int,
           shifts: Region | None) -> None:
    """A (rows x cols from the scratchpad) into the engine, with its rows' shifts (from the
    scratchpad, or zeros)."""
    plan.emit(Copy(SPAD, "gemm_a", rows, cols, src, src_row, 1, 0, plan.cfg.engine.max_k))
    if shifts is None:
        plan.emit(Copy(DRAM, "gemm_shift", 1, rows, plan.constant(0, rows).base, 0, 1, 0, 0))
    else:
        plan.emit(Copy(SPAD, "gemm_shift", 1, rows, shifts.base, 0, 1, 0, 0))


def linear(plan: Plan, layer: IntLinear, *, x: Region, rows: int, shifts: Region | None,
           what: str) -> Region:
    """`layer` on rows x K int8 activations at `x` (row-major) -> a rows x N region of the
    scratchpad, saturated to the layer's output width."""
    n, k = layer.weight.shape
    check_gemm_fits(plan.cfg, rows, k, what)
    out = plan.spad(rows * n, what)
    load_a(plan, rows=rows, cols=k, src=x.base, src_row=k, shifts=shifts)
    bias = plan.dram(layer.bias) if layer.bias is not None else plan.constant(0, n)
    gemm_chunks(plan, n=n, k=k, weights=plan.dram(layer.weight), w_row=1, w_col=k, bias=bias,
                multipliers=plan.dram(layer.requant.m), shift=layer.requant.shift,
                width=layer.out.bits, m=rows, dst=out.base, dst_row=n)
    return out


def product(plan: Plan, *, a: Region, a_row: int, rows: int, depth: int, b: Region,
            b_row: int, b_col: int, n: int, factor: Dyadic | None, dst: int, dst_row: int,
            what: str) -> None:
    """A GEMM between two scratchpad activations (attention's q k^T and p v): A rows x depth
    from `a`, B (depth x n) element (kk, j) at b.base + kk b_row + j b_col, no bias,
    requantized by `factor` (none: the int32 accumulators) into int32."""
    check_gemm_fits(plan.cfg, rows, depth, what)
    load_a(plan, rows=rows, cols=depth, src=a.base, src_row=a_row, shifts=None)
    factor = factor or Dyadic(1, 0)
    gemm_chunks(plan, n=n, k=depth, weights=b, w_row=b_row, w_col=b_col,
                bias=plan.constant(0, n), multipliers=plan.constant(factor.m, n),
                shift=factor.shift, width=32, m=rows, dst=dst, dst_row=dst_row,
                weights_from=SPAD)


def norm_rows(plan: Plan, norm: ILayerNorm | IRMSNorm, *, x: Region, rows: int, width: int,
              what: str) -> Region:
    """A LayerNorm or RMSNorm over rows x its width at `x`: its gamma (and beta; an RMSNorm's
    are zeros) into its unit, then the rows, saturated to `width` bits."""
    layer_norm = isinstance(norm, ILayerNorm)
    kind = "layernorm" if layer_norm else "rmsnorm"
    length = norm.gamma.numel()
    if length > plan.cfg.engine.max_row:
        raise UserInputError(f"{what}: rows of {length} exceed the {kind} unit's max_row; use "
                             f"max_row of at least {length}")
    beta = plan.dram(norm.beta) if layer_norm else plan.constant(0, length)
    out = plan.spad(rows * length, what)
    plan.emit(Copy(DRAM, "norm_gamma", 1, length, plan.dram(norm.gamma).base, 0, 1, 0, 0),
              Copy(DRAM, "norm_beta", 1, length, beta.base, 0, 1, 0, 0),
              Vector(kind, rows, length, x.base, length, out.base, length,
                     constants=(norm.eps & 0xFFFF_FFFF, norm.requant.m, norm.requant.shift,
                                width, norm.eps >> 32)))
    return out


def token_shift(plan: Plan, x: Region, rows: int, length: int, what: str, *,
                in_place: bool = False) -> tuple[Region, Region]:
    """Per-token shifts of rows x length int32 values: the int8 rows and one shift per row;
    `in_place` writes the rows over `x` (each element is written after it is read, and read
    once by the second pass)."""
    out = x if in_place else plan.spad(rows * length, what)
    shifts = plan.spad(rows, f"{what} shifts")
    plan.emit(Vector("token_shift", rows, length, x.base, length, out.base, length,
                     aux_base=shifts.base))
    return out, shifts


def residual(plan: Plan, a: Region, scale_a: float, b: Region, scale_b: float,
             scale_out: float, *, rows: int, length: int, width: int, what: str) -> Region:
    """`intops.residual_add` of two rows x length regions into a new one of `width` bits."""
    out = plan.spad(rows * length, what)
    m_a, m_b, shift = residual_factors(scale_a, scale_b, scale_out)
    plan.emit(Vector("add", rows, length, a.base, length, out.base, length, b.base, length,
                     constants=(m_a, m_b, shift, width)))
    return out


__all__ = ["WORDS", "Compiled", "Plan", "Region", "linear", "norm_rows", "product",
           "residual", "token_shift"]

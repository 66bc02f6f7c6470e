"""cocotb testbench of the GEMM engine (`hw.rtl.gemm`): whole tiled GEMMs through the host
ports against `intops.int_gemm` + `intops.requantize` (one multiplier per output channel),
bit for bit, with and without per-row (per-token) shifts, and the cycles from `start` to
`done` against `gemm_cycles`, exactly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, Timer

from mfmaccel.hw.intops import Dyadic, DyadicVector, IntRange, int_gemm, requantize
from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.gemm import (
    BUFFER_A,
    BUFFER_B,
    BUFFER_BIAS,
    BUFFER_M,
    BUFFER_SHIFT,
    gemm_cycles,
)
from mfmaccel.hw.rtl.signals import SEED, VECTORS, config_from_env


async def _write(dut, sel: int, addr: int, value: int, bits: int) -> None:
    dut.wr_en.value, dut.wr_sel.value, dut.wr_addr.value = 1, sel, addr
    dut.wr_data.value = value & ((1 << bits) - 1)
    await RisingEdge(dut.clk)


async def run_gemm(dut, cfg: RtlConfig, a: torch.Tensor, b: torch.Tensor, *, bias: torch.Tensor,
                   factor: DyadicVector, shifts: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Load the buffers, run, read back: (outputs, edges counted here, the `cycles` port)."""
    (m, k), n = a.shape, b.shape[1]
    for i in range(m):
        await _write(dut, BUFFER_SHIFT, i, int(shifts[i]), cfg.acc_bits)
    for i in range(m):
        for kk in range(k):
            await _write(dut, BUFFER_A, i * cfg.max_k + kk, int(a[i, kk]), cfg.acc_bits)
    for kk in range(k):
        for j in range(n):
            await _write(dut, BUFFER_B, kk * cfg.max_n + j, int(b[kk, j]), cfg.acc_bits)
    for j in range(n):
        await _write(dut, BUFFER_BIAS, j, int(bias[j]), cfg.acc_bits)
        await _write(dut, BUFFER_M, j, int(factor.m[j]), cfg.acc_bits)
    dut.wr_en.value = 0
    dut.dim_m.value, dut.dim_n.value, dut.dim_k.value = m, n, k
    dut.rq_shift.value = factor.shift
    dut.start.value = 1
    await RisingEdge(dut.clk)
    dut.start.value = 0
    edges = 1
    while True:
        await Timer(1, unit="ns")
        if int(dut.done.value):
            break
        await RisingEdge(dut.clk)
        edges += 1
    out = torch.empty(m, n, dtype=torch.long)
    for i in range(m):
        for j in range(n):
            dut.rd_addr.value = i * cfg.max_n + j
            await Timer(1, unit="ns")
            out[i, j] = dut.rd_data.value.to_signed()
    return out, edges, int(dut.cycles.value)


def _cases(cfg: RtlConfig, generator: torch.Generator):
    """Edge cases, then random GEMMs until VECTORS outputs are covered; every other random GEMM
    has per-row shifts (below its requantization shift, up to a token shift's 24), the rest
    none."""
    def full(rows, cols, value):
        return torch.full((rows, cols), value, dtype=torch.long)

    m, n, k = cfg.max_m, cfg.max_n, cfg.max_k
    top = (1 << (cfg.acc_bits - 1)) - 1
    yield full(m, k, -128), full(k, n, -128), torch.full((n,), top - 128 * 128 * k), \
        Dyadic(1, 0), None  # the largest sum that fits; saturates
    yield full(m, k, 127), full(k, n, -128), torch.full((n,), -top - 1 + 127 * 128 * k), \
        Dyadic((1 << cfg.multiplier_bits) - 1, 40), None
    yield full(1, 1, 0), full(1, 1, 0), torch.zeros(1, dtype=torch.long), Dyadic(1, 0), None
    yield full(m - 1, 3, 5), full(3, n - 1, 5), torch.full((n - 1,), 7), Dyadic(1 << 20, 22), \
        None
    # row shifts on the int32 extremes: biases alone (zero products) shifted by 0..max_m-1
    # (and the requantization shift lowered as much); then shifts past the accumulator's width
    extremes = torch.tensor([top, -top - 1] * (n // 2) + [top] * (n % 2))
    yield full(m, 1, 0), full(1, n, 5), extremes, Dyadic(3, 40), torch.arange(m)[:, None]
    yield full(m, 2, 1), full(2, n, 1), torch.full((n,), -top - 1), Dyadic(1 << 30, 39), \
        torch.full((m, 1), 38)
    covered, count = 0, 0
    while covered < VECTORS:
        dims = [int(torch.randint(1, top_dim + 1, (1,), generator=generator))
                for top_dim in (m, n, min(k, 24))]
        a = torch.randint(-128, 128, (dims[0], dims[2]), generator=generator)
        b = torch.randint(-128, 128, (dims[2], dims[1]), generator=generator)
        bias = torch.randint(-(1 << 30), 1 << 30, (dims[1],), generator=generator)
        multipliers = torch.randint(1 << 20, 1 << cfg.multiplier_bits, (dims[1],),
                                    generator=generator)
        factor = DyadicVector(multipliers, int(torch.randint(30, 46, (1,), generator=generator)))
        shifts = torch.randint(0, 25, (dims[0], 1), generator=generator) if count % 2 else None
        yield a, b, bias, factor, shifts
        covered, count = covered + dims[0] * dims[1], count + 1


@cocotb.test()
async def gemm_matches_golden(dut) -> None:
    cfg = config_from_env()
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value, dut.wr_en.value, dut.start.value = 1, 0, 0
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    generator = torch.Generator().manual_seed(SEED)
    out_range = IntRange(cfg.out_bits)
    timings = []
    for a, b, bias, factor, shifts in _cases(cfg, generator):
        if isinstance(factor, Dyadic):  # one multiplier for every channel
            factor = DyadicVector(torch.full((b.shape[1],), factor.m), factor.shift)
        expected = requantize(int_gemm(a, b.t(), bias, shifts), factor, out_range, shifts)
        rows = torch.zeros(a.shape[0], dtype=torch.long) if shifts is None else shifts[:, 0]
        got, edges, cycles = await run_gemm(dut, cfg, a, b, bias=bias, factor=factor, shifts=rows)
        shape = f"{a.shape[0]}x{a.shape[1]} @ {b.shape[0]}x{b.shape[1]}"
        assert torch.equal(got, expected), f"{shape}: rtl outputs differ from golden"
        model = gemm_cycles(cfg, a.shape[0], b.shape[1], a.shape[1])
        assert edges == cycles == model, f"{shape}: {edges} edges, {cycles} counted, model {model}"
        timings.append({"m": a.shape[0], "n": b.shape[1], "k": a.shape[1], "cycles": cycles})
    if os.environ.get("RTL_RECORD"):  # benchmarks/rtl_units.py reads the simulated latencies
        Path(os.environ["RTL_RECORD"]).write_text(json.dumps(timings))

"""cocotb testbenches: each generated unit against `hw.intops`, bit for bit, on random vectors
(RTL_VECTORS, default 10,000) and edge cases (int8 and int32 extremes, all-zero and all-equal
operands, sums at the edge of overflow). `hw.rtl.verify.simulate` runs them under Icarus."""

from __future__ import annotations

import random

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, Timer

from mfmaccel.hw.intops import Dyadic, IntRange, int_gemm, requantize, token_shifts
from mfmaccel.hw.rtl.cases import iexp_inputs, requant_cases, token_rows
from mfmaccel.hw.rtl.signals import SEED, VECTORS, config_from_env, pack, unpack_signed
from mfmaccel.hw.rtl.testbench_gemm import gemm_matches_golden  # noqa: F401  (cocotb finds it)
from mfmaccel.hw.rtl.testbench_nonlinear import (  # noqa: F401
    igelu_matches_golden,
    layernorm_matches_golden,
    softmax_matches_golden,
)


@cocotb.test()
async def requant_matches_golden(dut) -> None:
    cfg = config_from_env()
    acc_bits, out_bits = len(dut.acc), len(dut.q)
    cases = requant_cases(cfg, random.Random(SEED), VECTORS)
    out = IntRange(out_bits)
    for acc, m, shift in cases:
        dut.acc.value = acc & ((1 << acc_bits) - 1)
        dut.m.value = m
        dut.shift.value = shift
        await Timer(1, unit="ns")
        expected = int(requantize(torch.tensor([acc]), Dyadic(m, shift), out)[0])
        got = dut.q.value.to_signed()
        assert got == expected, f"acc={acc} m={m} shift={shift}: rtl {got}, golden {expected}"


async def _gemm(dut, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor,
                shifts: torch.Tensor) -> torch.Tensor:
    """Load the bias (shifted per row), stream K rank-1 updates, read the accumulators
    (rows x cols)."""
    rows, cols = a.shape[0], b.shape[1]
    in_bits, acc_bits = len(dut.a) // rows, len(dut.bias) // cols
    dut.bias.value = pack(bias.tolist(), acc_bits)
    dut.bias_shift.value = pack(shifts[:, 0].tolist(), len(dut.bias_shift) // rows)
    dut.load.value, dut.en.value = 1, 0
    await RisingEdge(dut.clk)
    dut.load.value = 0
    for k in range(a.shape[1]):
        dut.a.value = pack(a[:, k].tolist(), in_bits)
        dut.b.value = pack(b[k].tolist(), in_bits)
        dut.en.value = 1
        await RisingEdge(dut.clk)
    dut.en.value = 0
    await RisingEdge(dut.clk)
    word = dut.acc.value.to_unsigned()
    return torch.tensor(unpack_signed(word, rows * cols, acc_bits)).view(rows, cols)


@cocotb.test()
async def mac_array_matches_golden(dut) -> None:
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value, dut.load.value, dut.en.value = 1, 0, 0
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    cols = len(dut.b) // 8
    rows = len(dut.a) // 8
    widest = (1 << (len(dut.bias_shift) // rows)) - 1
    generator = torch.Generator().manual_seed(SEED)
    depth = 64
    cases = [
        (torch.full((rows, depth), -128), torch.full((depth, cols), -128),
         torch.full((cols,), 2**31 - 1 - 128 * 128 * depth)),  # largest sum that still fits
        (torch.zeros(rows, depth, dtype=torch.long), torch.zeros(depth, cols, dtype=torch.long),
         torch.zeros(cols, dtype=torch.long)),
        (torch.full((rows, depth), 127), torch.full((depth, cols), -128),
         torch.full((cols,), -(2**31) + 127 * 128 * depth)),
        (torch.full((rows, depth), 7), torch.full((depth, cols), 7), torch.full((cols,), 3)),
    ]
    none = torch.zeros(rows, 1, dtype=torch.long)
    cases = [(*case, none) for case in cases]
    # bias shifts alone on the int32 extremes: every shift from 0 to the port's widest
    extremes = torch.tensor([2**31 - 1, -(2**31)] * (cols // 2) + [2**31 - 1] * (cols % 2))
    for first in range(0, widest + 1, rows):
        shifts = (first + torch.arange(rows)[:, None]).clamp(max=widest)
        zero = torch.zeros(1, 1, dtype=torch.long)
        cases.append((zero.expand(rows, 1), zero.expand(1, cols), extremes, shifts))
    gemms = max(1, VECTORS // (rows * cols))
    for index in range(gemms):
        k = int(torch.randint(1, 40, (1,), generator=generator))
        shifts = torch.randint(0, widest + 1, (rows, 1), generator=generator)
        cases.append((torch.randint(-128, 128, (rows, k), generator=generator),
                      torch.randint(-128, 128, (k, cols), generator=generator),
                      torch.randint(-2**30, 2**30, (cols,), generator=generator),
                      shifts if index % 2 else none))
    for a, b, bias, shifts in cases:
        expected = int_gemm(a.long(), b.long().t(), bias, shifts)
        got = await _gemm(dut, a, b, bias, shifts)
        assert torch.equal(got, expected), f"K={a.shape[1]}: rtl differs from golden"


@cocotb.test()
async def iexp_matches_golden(dut) -> None:
    from mfmaccel.hw.intops import IExp

    unit = IExp.build(config_from_env().exp_input_scale)
    in_bits = len(dut.q)
    cases = iexp_inputs(config_from_env(), random.Random(SEED), VECTORS)
    expected = unit(torch.tensor(cases)).tolist()
    for q, want in zip(cases, expected, strict=True):
        dut.q.value = q & ((1 << in_bits) - 1)
        await Timer(1, unit="ns")
        got = dut.out.value.to_unsigned()
        assert got == want, f"q={q}: rtl {got}, golden {want}"


@cocotb.test()
async def token_shift_matches_golden(dut) -> None:
    lanes = config_from_env().token_len
    in_bits, out_bits = len(dut.x) // lanes, len(dut.q) // lanes
    for row in token_rows(lanes, in_bits, random.Random(SEED), VECTORS):
        dut.x.value = pack(row, in_bits)
        await Timer(1, unit="ns")
        expected, shift = token_shifts(torch.tensor([row]), IntRange(out_bits))
        got = unpack_signed(dut.q.value.to_unsigned(), lanes, out_bits)
        assert got == expected[0].tolist() and dut.shift.value.to_unsigned() == int(shift), (
            f"row {row}: rtl {got} >> {dut.shift.value.to_unsigned()}, golden "
            f"{expected[0].tolist()} >> {int(shift)}")

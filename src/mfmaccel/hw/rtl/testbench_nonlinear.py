"""cocotb testbenches of i-GELU, the integer softmax (`hw.rtl.nonlinear`) and LayerNorm
(`hw.rtl.norm`) against `intops.IGelu`, `intops.i_softmax` and `intops.ILayerNorm`, bit for
bit."""

from __future__ import annotations

import random

import cocotb
import torch
from cocotb.triggers import Timer

from mfmaccel.hw.intops import (
    DatapathOverflow,
    Dyadic,
    IExp,
    IGelu,
    ILayerNorm,
    IntRange,
    i_softmax,
)
from mfmaccel.hw.intops.norms import GAMMA_BITS, NORM_INPUT
from mfmaccel.hw.rtl.signals import (
    SEED,
    VECTORS,
    config_from_env,
    pack,
    unpack_signed,
    unpack_unsigned,
)


def _gelu_golden(unit: IGelu, q: int) -> int | None:
    """The golden output, or None where it refuses (the result leaves int32)."""
    try:
        return int(unit(torch.tensor([q]))[0])
    except DatapathOverflow:
        return None


@cocotb.test()
async def igelu_matches_golden(dut) -> None:
    cfg = config_from_env()
    unit = IGelu.build(cfg.gelu_input_scale)
    low, high = -(1 << (cfg.in_bits - 1)), (1 << (cfg.in_bits - 1)) - 1
    rng = random.Random(SEED)
    every = list(range(low, high + 1))  # the whole input range, then random repeats
    for q in every + [rng.randint(low, high) for _ in range(VECTORS)]:
        dut.q.value = q
        await Timer(1, unit="ns")
        want = _gelu_golden(unit, q)
        if want is None:
            assert int(dut.overflow.value) == 1, f"q={q}: int32 overflow not flagged"
        else:
            got = dut.out.value.to_signed()
            assert not int(dut.overflow.value) and got == want, f"q={q}: rtl {got}, golden {want}"


def _softmax_rows(cfg, rng: random.Random) -> list[list[int]]:
    """Edge rows (int32 extremes, all equal, all zero, one spike), then random rows: half
    spread over the whole int32 range, half within a few ln 2 steps of each other (where the
    division does the work)."""
    lanes, top = cfg.softmax_len, (1 << (cfg.acc_bits - 1)) - 1
    q_ln2 = IExp.build(cfg.exp_input_scale).q_ln2
    rows = [[0] * lanes, [top] * lanes, [-top - 1] * lanes, [top] + [-top - 1] * (lanes - 1),
            [-top - 1] * (lanes - 1) + [top], [5] * lanes, list(range(lanes))]
    while len(rows) * lanes < VECTORS:
        if len(rows) % 2:
            rows.append([rng.randint(-top - 1, top) for _ in range(lanes)])
        else:
            base = rng.randint(-top // 2, top // 2)
            rows.append([base - rng.randint(0, 12 * q_ln2) for _ in range(lanes)])
    return rows


@cocotb.test()
async def softmax_matches_golden(dut) -> None:
    cfg = config_from_env()
    exp = IExp.build(cfg.exp_input_scale)
    for row in _softmax_rows(cfg, random.Random(SEED)):
        dut.q.value = pack(row, cfg.acc_bits)
        await Timer(1, unit="ns")
        want = i_softmax(torch.tensor([row]), exp, cfg.softmax_bits)[0].tolist()
        got = unpack_unsigned(dut.p.value.to_unsigned(), cfg.softmax_len, cfg.softmax_bits)
        assert got == want, f"row {row}: rtl {got}, golden {want}"


def _layernorm_cases(cfg, rng: random.Random):
    """(row, gamma, beta, eps, m, shift): edge rows (all equal, all zero, int24 extremes,
    alternating extremes: the largest variance), then random rows, gammas and factors."""
    lanes = cfg.norm_len
    low, high = NORM_INPUT.low, NORM_INPUT.high
    g_top = (1 << (GAMMA_BITS - 1)) - 1
    unit_gamma, no_beta = [g_top] * lanes, [0] * lanes
    yield [0] * lanes, unit_gamma, no_beta, 0, 1, 0
    yield [7] * lanes, unit_gamma, [(1 << 31) - 1] * lanes, 0, 1, 0
    yield [high] * lanes, [-g_top] * lanes, [-(1 << 31)] * lanes, 5, (1 << 31) - 1, 63
    yield [low, high] * (lanes // 2) + [low] * (lanes % 2), unit_gamma, no_beta, 0, 1 << 30, 45
    yield [low] + [high] * (lanes - 1), unit_gamma, no_beta, (1 << 32) - 1, 1 << 30, 45
    for _ in range(max(1, VECTORS // lanes)):
        spread = rng.choice((3, 1 << 10, high))
        centre = rng.randint(low + spread, high - spread)
        yield ([rng.randint(centre - spread, centre + spread) for _ in range(lanes)],
               [rng.randint(-g_top, g_top) for _ in range(lanes)],
               [rng.randint(-(1 << 28), 1 << 28) for _ in range(lanes)],
               rng.randint(0, 1 << 20), rng.randint(1 << 29, (1 << 31) - 1),
               rng.randint(38, 52))


@cocotb.test()
async def layernorm_matches_golden(dut) -> None:
    cfg = config_from_env()
    for row, gamma, beta, eps, m, shift in _layernorm_cases(cfg, random.Random(SEED)):
        dut.q.value = pack(row, NORM_INPUT.bits)
        dut.gamma.value = pack(gamma, GAMMA_BITS)
        dut.beta.value = pack(beta, 32)
        dut.eps.value, dut.rq_m.value, dut.rq_shift.value = eps, m, shift
        await Timer(1, unit="ns")
        golden = ILayerNorm(torch.tensor(gamma), torch.tensor(beta), eps, Dyadic(m, shift),
                            IntRange(cfg.out_bits))
        want = golden(torch.tensor([row]))[0].tolist()
        got = unpack_signed(dut.out.value.to_unsigned(), cfg.norm_len, cfg.out_bits)
        assert got == want, f"row {row} gamma {gamma} eps {eps}: rtl {got}, golden {want}"

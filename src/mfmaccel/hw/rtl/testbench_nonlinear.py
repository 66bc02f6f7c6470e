"""cocotb testbenches of i-GELU and the integer softmax (`hw.rtl.nonlinear`) against
`intops.IGelu` and `intops.i_softmax`, bit for bit."""

from __future__ import annotations

import random

import cocotb
import torch
from cocotb.triggers import Timer

from mfmaccel.hw.intops import DatapathOverflow, IExp, IGelu, i_softmax
from mfmaccel.hw.rtl.signals import SEED, VECTORS, config_from_env, pack, unpack_unsigned


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
        want = i_softmax(torch.tensor([row]), exp, cfg.out_bits)[0].tolist()
        got = unpack_unsigned(dut.p.value.to_unsigned(), cfg.softmax_len, cfg.out_bits)
        assert got == want, f"row {row}: rtl {got}, golden {want}"

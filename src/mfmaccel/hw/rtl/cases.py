"""The inputs each combinational unit is checked on: edge cases first, then random values.

Why apart from the cocotb benches: the same cases judge our generated units (`testbench*`,
under cocotb) and a language model's version of them (`hw.llm_design.unit_tasks`, a plain
Verilog bench in the sandbox), so both are held to the same edges. No cocotb import here.
"""

from __future__ import annotations

import random

import torch

from mfmaccel.hw.intops import DatapathOverflow, IExp, IGelu
from mfmaccel.hw.intops.norms import GAMMA_BITS, NORM_INPUT
from mfmaccel.hw.rtl.config import RtlConfig


def requant_cases(cfg: RtlConfig, rng: random.Random, count: int) -> list[tuple[int, int, int]]:
    """(acc, m, shift): int32 extremes x multiplier extremes x short and long shifts, then
    `count` random triples."""
    shift_max = (1 << cfg.shift_bits) - 1
    low, high = -(1 << (cfg.acc_bits - 1)), (1 << (cfg.acc_bits - 1)) - 1
    m_top = (1 << cfg.multiplier_bits) - 1
    edges = [(a, m, s) for a in (low, high, 0, -1, 1) for m in (0, 1, m_top)
             for s in (0, 1, 31, shift_max)]
    return edges + [(rng.randint(low, high), rng.randint(0, m_top), rng.randint(0, shift_max))
                    for _ in range(count)]


def iexp_inputs(cfg: RtlConfig, rng: random.Random, count: int) -> list[int]:
    """q <= 0: zero, the range's end, either side of multiples of q_ln2 (where z steps and
    where the output shift saturates), then half near the interesting range, half anywhere."""
    unit = IExp.build(cfg.exp_input_scale)
    low = -((1 << (cfg.acc_bits - 1)) - 1)
    edges = [0, -1, low, -unit.q_ln2, -unit.q_ln2 + 1, -unit.q_ln2 - 1, -31 * unit.q_ln2,
             -32 * unit.q_ln2, -40 * unit.q_ln2]
    near = [-rng.randint(0, 40 * unit.q_ln2) for _ in range(count // 2)]
    return edges + near + [rng.randint(low, 0) for _ in range(count - len(near))]


def igelu_inputs(cfg: RtlConfig, rng: random.Random, count: int) -> list[int]:
    """Every int8 (in_bits) input, then `count` random repeats."""
    low, high = -(1 << (cfg.in_bits - 1)), (1 << (cfg.in_bits - 1)) - 1
    return list(range(low, high + 1)) + [rng.randint(low, high) for _ in range(count)]


def igelu_golden(unit: IGelu, q: int) -> int | None:
    """The golden output, or None where it refuses (the result leaves int32: the unit's
    `overflow` output must be high there)."""
    try:
        return int(unit(torch.tensor([q]))[0])
    except DatapathOverflow:
        return None


def token_rows(lanes: int, in_bits: int, rng: random.Random, count: int) -> list[list[int]]:
    """Edge rows (zeros, extremes, magnitudes at every power-of-two boundary near int8) and
    `count` random rows whose largest magnitude has a random bit length, so every shift
    occurs."""
    low, high = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    rows = [[0] * lanes, [low] * lanes, [high] * lanes, [low, high] * (lanes // 2) + [0] *
            (lanes % 2)]
    for peak in (1, 63, 64, 127, 128, 129, 191, 192, 255, 256, 383, 384, 1 << 20, high):
        rows += [[peak] + [0] * (lanes - 1), [-peak] + [1] * (lanes - 1),
                 [0] * (lanes - 1) + [max(low, -peak - 1)]]
    for _ in range(count):
        bits = rng.randint(0, in_bits - 1)
        rows.append([rng.randint(max(low, -(1 << bits)), min(high, (1 << bits) - 1))
                     for _ in range(lanes)])
    return rows


def softmax_rows(cfg: RtlConfig, rng: random.Random, count: int) -> list[list[int]]:
    """Edge rows (int32 extremes, all equal, all zero, one spike), then random rows up to
    `count` values in all: half spread over the whole int32 range, half within a few ln 2
    steps of each other (where the division does the work)."""
    lanes, top = cfg.softmax_len, (1 << (cfg.acc_bits - 1)) - 1
    q_ln2 = IExp.build(cfg.exp_input_scale).q_ln2
    rows = [[0] * lanes, [top] * lanes, [-top - 1] * lanes, [top] + [-top - 1] * (lanes - 1),
            [-top - 1] * (lanes - 1) + [top], [5] * lanes, list(range(lanes))]
    while len(rows) * lanes < count:
        if len(rows) % 2:
            rows.append([rng.randint(-top - 1, top) for _ in range(lanes)])
        else:
            base = rng.randint(-top // 2, top // 2)
            rows.append([base - rng.randint(0, 12 * q_ln2) for _ in range(lanes)])
    return rows


def layernorm_cases(cfg: RtlConfig, rng: random.Random, count: int):
    """(row, gamma, beta, eps, m, shift): edge rows (all equal, all zero, int24 extremes,
    alternating extremes: the largest variance), then random rows, gammas and factors, about
    `count` values in all."""
    lanes = cfg.norm_len
    low, high = NORM_INPUT.low, NORM_INPUT.high
    g_top = (1 << (GAMMA_BITS - 1)) - 1
    unit_gamma, no_beta = [g_top] * lanes, [0] * lanes
    yield [0] * lanes, unit_gamma, no_beta, 0, 1, 0
    yield [7] * lanes, unit_gamma, [(1 << 31) - 1] * lanes, 0, 1, 0
    yield [high] * lanes, [-g_top] * lanes, [-(1 << 31)] * lanes, 5, (1 << 31) - 1, 63
    yield [low, high] * (lanes // 2) + [low] * (lanes % 2), unit_gamma, no_beta, 0, 1 << 30, 45
    yield [low] + [high] * (lanes - 1), unit_gamma, no_beta, (1 << 32) - 1, 1 << 30, 45
    for _ in range(max(1, count // lanes)):
        spread = rng.choice((3, 1 << 10, high))
        centre = rng.randint(low + spread, high - spread)
        yield ([rng.randint(centre - spread, centre + spread) for _ in range(lanes)],
               [rng.randint(-g_top, g_top) for _ in range(lanes)],
               [rng.randint(-(1 << 28), 1 << 28) for _ in range(lanes)],
               rng.randint(0, 1 << 20), rng.randint(1 << 29, (1 << 31) - 1),
               rng.randint(38, 52))

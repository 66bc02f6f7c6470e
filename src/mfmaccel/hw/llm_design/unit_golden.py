"""Golden samples of our units, computed by `hw.intops`: the expected outputs a language
model's design must reproduce bit for bit.

Why intops and not our generated Verilog: the unit tasks judge a design against the integer
algorithm itself (the same cases `hw.rtl.cases` gives our own cocotb benches), so a model's
design and ours are held to one standard. The MAC array is clocked: its samples are cycles,
and its golden value is the accumulators after each rising edge, from a per-cycle model whose
rounding is `intops.rounding_shift` (tests check a whole GEMM of cycles against
`intops.int_gemm`).
"""

from __future__ import annotations

import random

import torch

from mfmaccel.hw.intops import (
    DatapathOverflow,
    Dyadic,
    IExp,
    IGelu,
    ILayerNorm,
    IntRange,
    i_softmax,
    requantize,
    rounding_shift,
    token_shifts,
)
from mfmaccel.hw.llm_design.unit_bench import Sample
from mfmaccel.hw.rtl import cases
from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.signals import unpack_signed


def requant_samples(cfg: RtlConfig, rng: random.Random, count: int) -> list[Sample]:
    out = IntRange(cfg.out_bits)
    return [({"acc": acc, "m": m, "shift": shift},
             {"q": int(requantize(torch.tensor([acc]), Dyadic(m, shift), out)[0])})
            for acc, m, shift in cases.requant_cases(cfg, rng, count)]


def iexp_samples(cfg: RtlConfig, rng: random.Random, count: int) -> list[Sample]:
    unit = IExp.build(cfg.exp_input_scale)
    inputs = cases.iexp_inputs(cfg, rng, count)
    return [({"q": q}, {"out": int(e)})
            for q, e in zip(inputs, unit(torch.tensor(inputs)).tolist(), strict=True)]


def igelu_samples(cfg: RtlConfig, rng: random.Random, count: int) -> list[Sample]:
    unit = IGelu.build(cfg.gelu_input_scale)
    samples = []
    for q in cases.igelu_inputs(cfg, rng, count):
        want = cases.igelu_golden(unit, q)
        samples.append(({"q": q}, {"out": 0, "overflow": 1} if want is None
                        else {"out": want, "overflow": 0}))
    return samples


def softmax_samples(cfg: RtlConfig, rng: random.Random, count: int) -> list[Sample]:
    exp = IExp.build(cfg.exp_input_scale)
    rows = cases.softmax_rows(cfg, rng, count)
    return [({"q": row}, {"p": i_softmax(torch.tensor([row]), exp, cfg.softmax_bits)[0].tolist()})
            for row in rows]


def layernorm_samples(cfg: RtlConfig, rng: random.Random, count: int) -> list[Sample]:
    samples = []
    for row, gamma, beta, eps, m, shift in cases.layernorm_cases(cfg, rng, count):
        golden = ILayerNorm(torch.tensor(gamma), torch.tensor(beta), eps, Dyadic(m, shift),
                            IntRange(cfg.out_bits))
        try:
            out = golden(torch.tensor([row]))[0].tolist()
        except DatapathOverflow:  # the golden model refuses: no expected value to hold to
            continue
        samples.append(({"q": row, "gamma": gamma, "beta": beta, "eps": eps, "rq_m": m,
                         "rq_shift": shift}, {"out": out}))
    return samples


def token_shift_samples(cfg: RtlConfig, rng: random.Random, count: int) -> list[Sample]:
    out = IntRange(cfg.out_bits)
    samples = []
    for row in cases.token_rows(cfg.token_len, cfg.acc_bits, rng, count):
        shifted, shift = token_shifts(torch.tensor([row]), out)
        samples.append(({"x": row}, {"q": shifted[0].tolist(), "shift": int(shift)}))
    return samples


def mac_array_samples(cfg: RtlConfig, rng: random.Random, count: int) -> list[Sample]:
    """Cycles: a reset, then GEMMs (a bias load, K rank-1 updates, idle cycles between),
    first at the int32 edges and every bias shift, then random ones, about `count` cycles."""
    model = MacArrayModel(cfg)
    samples = []
    for cycle in mac_array_cycles(cfg, rng, count):
        samples.append((cycle, {"acc": model.step(**cycle)}))
    return samples


class MacArrayModel:
    """The MAC array's accumulators, one rising edge at a time."""

    def __init__(self, cfg: RtlConfig) -> None:
        self.cfg = cfg
        self.acc = [0] * (cfg.rows * cfg.cols)

    def step(self, *, rst: int, load: int, en: int, a: list[int], b: list[int],
             bias: list[int], bias_shift: list[int]) -> list[int]:
        """The accumulators after one edge with these inputs (row-major, int32 wrapping)."""
        rows, cols = self.cfg.rows, self.cfg.cols
        if rst:
            self.acc = [0] * (rows * cols)
        elif load:
            loaded = rounding_shift(torch.tensor(bias).repeat(rows, 1),
                                    torch.tensor(bias_shift)[:, None])
            self.acc = [_wrap(int(v), self.cfg.acc_bits) for v in loaded.flatten().tolist()]
        elif en:
            self.acc = [_wrap(self.acc[i * cols + j] + a[i] * b[j], self.cfg.acc_bits)
                        for i in range(rows) for j in range(cols)]
        return list(self.acc)


def mac_array_cycles(cfg: RtlConfig, rng: random.Random, count: int) -> list[dict]:
    """The input of each cycle (see `mac_array_samples`)."""
    rows, cols = cfg.rows, cfg.cols
    widest = (1 << cfg.shift_bits) - 1
    top = (1 << (cfg.acc_bits - 1)) - 1
    low, high = -(1 << (cfg.in_bits - 1)), (1 << (cfg.in_bits - 1)) - 1
    idle = {"rst": 0, "load": 0, "en": 0, "a": [0] * rows, "b": [0] * cols,
            "bias": [0] * cols, "bias_shift": [0] * rows}
    cycles = [{**idle, "rst": 1}, {**idle, "rst": 1, "en": 1, "a": [1] * rows, "b": [1] * cols}]
    depth = 8
    edges = [(low, low, top - low * low * depth), (high, low, -top - 1 + high * -low * depth),
             (0, 0, 0), (7, 7, 3)]
    for a, b, bias in edges:
        cycles += _gemm_cycles(idle, [[a] * rows] * depth, [[b] * cols] * depth, [bias] * cols,
                               [0] * rows)
    extremes = [top, -top - 1] * (cols // 2) + [top] * (cols % 2)
    for first in range(0, widest + 1, rows):
        shifts = [min(first + i, widest) for i in range(rows)]
        cycles += _gemm_cycles(idle, [], [], extremes, shifts)
    while len(cycles) < count:
        k = rng.randint(1, 12)
        cycles += _gemm_cycles(
            idle, [[rng.randint(low, high) for _ in range(rows)] for _ in range(k)],
            [[rng.randint(low, high) for _ in range(cols)] for _ in range(k)],
            [rng.randint(-(1 << 30), 1 << 30) for _ in range(cols)],
            [rng.randint(0, widest) for _ in range(rows)], rng=rng)
    return cycles


def _gemm_cycles(idle: dict, a_columns: list[list[int]], b_rows: list[list[int]],
                 bias: list[int], shifts: list[int], rng: random.Random | None = None):
    """A load cycle (with `en` high too when `rng` says so: load wins), the updates (an idle
    cycle between two of them now and then), one idle cycle to read the result."""
    both = bool(rng and rng.random() < 0.3)
    cycles = [{**idle, "load": 1, "en": int(both), "bias": bias, "bias_shift": shifts,
               "a": a_columns[0] if both and a_columns else idle["a"],
               "b": b_rows[0] if both and b_rows else idle["b"]}]
    for a, b in zip(a_columns, b_rows, strict=True):
        if rng and rng.random() < 0.2:
            cycles.append({**idle, "a": a, "b": b})  # en low: the accumulators hold
        cycles.append({**idle, "en": 1, "a": a, "b": b})
    return cycles + [dict(idle)]


def _wrap(value: int, bits: int) -> int:
    """`value` modulo 2^bits, as a signed number (the accumulators' overflow)."""
    return unpack_signed(value, 1, bits)[0]

"""Rows for the row-shaped streaming units (softmax, LayerNorm, RMSNorm, SiLU): realistic
random rows of lengths 64..1024, edge rows (length 1, max_row, all equal, the input range's
extremes, one huge outlier, lengths around a beat), and each unit's golden answer from
`hw.intops`. The norms come in groups sharing one layer's parameters (gamma, beta, eps, the
requantization), written into the unit before the group's rows.
"""

from __future__ import annotations

import random
from dataclasses import replace

import torch

from mfmaccel.hw.intops import IExp, ILayerNorm, IntRange, IRMSNorm, ISigmoid, i_silu, i_softmax
from mfmaccel.hw.intops.datapath import DatapathOverflow, Dyadic
from mfmaccel.hw.intops.norms import GAMMA_BITS, NORM_INPUT
from mfmaccel.hw.rtl.config import SIGMOID_BITS, RtlConfig
from mfmaccel.hw.rtl.signals import pack
from mfmaccel.hw.rtl.stream_cases import Batch, OutputShape, add_row, refuse_long_rows
from mfmaccel.hw.rtl.stream_common import beats, bits_for
from mfmaccel.hw.rtl.stream_norm import EPS_BITS
from mfmaccel.hw.rtl.testbench_stream import Field, Harness

Rows = list[list[int]]
INT32_TOP = (1 << 31) - 1


def _beat_fields(cfg: RtlConfig, bits: int) -> tuple[Field, ...]:
    lanes = cfg.stream_lanes
    return (Field("in_data", lanes * bits), Field("in_count", bits_for(lanes)),
            Field("in_last", 1))


def _edge_lengths(cfg: RtlConfig) -> list[int]:
    """1, max_row, and lengths around one and two beats (partial last beats)."""
    lanes = cfg.stream_lanes
    return sorted({n for n in (1, lanes - 1, lanes, lanes + 1, 2 * lanes + 1, cfg.max_row)
                   if 1 <= n <= cfg.max_row})


def _generator(rng: random.Random) -> torch.Generator:
    return torch.Generator().manual_seed(rng.randrange(1 << 62))


def _extremes(length: int, low: int, high: int, rng: random.Random) -> Rows:
    """All equal, all at either extreme, the two extremes mixed, one huge outlier."""
    spike = [low] * length
    spike[rng.randrange(length)] = high
    small = [rng.randint(-3, 3) for _ in range(length)]
    small[rng.randrange(length)] = high
    return [[5] * length, [high] * length, [low] * length,
            [high if i % 2 else low for i in range(length)], spike, small]


# --- softmax ---------------------------------------------------------------------------------

def softmax_harness(cfg: RtlConfig) -> Harness:
    lanes = cfg.stream_lanes
    return Harness("stream_softmax", _beat_fields(cfg, cfg.acc_bits),
                   lanes * cfg.softmax_bits, bits_for(lanes))


def softmax_shape(cfg: RtlConfig) -> OutputShape:
    return OutputShape(cfg.stream_lanes, cfg.softmax_bits, signed=False)


def softmax_batch(cfg: RtlConfig, rows: Rows) -> Batch:
    refuse_long_rows([len(r) for r in rows], cfg.max_row)
    harness, exp, batch = softmax_harness(cfg), IExp.build(cfg.exp_input_scale), Batch()
    for row in rows:
        want = i_softmax(torch.tensor([row]), exp, cfg.softmax_bits)[0].tolist()
        add_row(batch, harness, row, lanes=cfg.stream_lanes, bits=cfg.acc_bits, expected=want)
    return batch


def softmax_rows(cfg: RtlConfig, rng: random.Random, lengths: list[int]) -> Rows:
    """Attention scores at the unit's input scale: float logits with a spread of 1 to 8,
    half of them with one key far above the rest; some rows within a few ln 2 steps of each
    other (where the division does the work) and some spread over all of int32."""
    gen, scale = _generator(rng), cfg.exp_input_scale
    q_ln2 = IExp.build(scale).q_ln2
    rows = []
    for length in lengths:
        kind = rng.random()
        if kind < 0.6:
            logits = torch.randn(length, generator=gen, dtype=torch.float64) * rng.choice(
                (1.0, 3.0, 8.0))
            if rng.random() < 0.5:
                logits[rng.randrange(length)] += rng.uniform(5, 40)
            row = torch.round(logits / scale).clamp(-INT32_TOP - 1, INT32_TOP).long()
        elif kind < 0.8:
            base = rng.randint(-INT32_TOP // 2, INT32_TOP // 2)
            row = base - torch.randint(0, 12 * q_ln2 + 1, (length,), generator=gen)
        else:
            row = torch.randint(-INT32_TOP - 1, INT32_TOP + 1, (length,), generator=gen)
        rows.append(row.tolist())
    return rows


def softmax_edges(cfg: RtlConfig, rng: random.Random) -> Rows:
    rows = [softmax_rows(cfg, rng, [n])[0] for n in _edge_lengths(cfg)]
    for n in (1, min(cfg.max_row, 3 * cfg.stream_lanes + 1), cfg.max_row):
        rows += _extremes(n, -INT32_TOP - 1, INT32_TOP, rng)
    return rows


# --- LayerNorm and RMSNorm -------------------------------------------------------------------

Group = tuple[ILayerNorm | IRMSNorm, Rows]


def norm_harness(cfg: RtlConfig, *, centred: bool) -> Harness:
    lanes = cfg.stream_lanes
    params = [Field("par_addr", bits_for(beats(cfg.max_row, lanes) - 1)),
              Field("par_gamma", lanes * GAMMA_BITS)]
    params += [Field("par_beta", lanes * 32)] if centred else []
    params += [Field("eps", EPS_BITS), Field("rq_m", cfg.multiplier_bits),
               Field("rq_shift", cfg.shift_bits)]
    out_bits = cfg.out_bits if centred else cfg.rmsnorm_out_bits
    return Harness("stream_layernorm" if centred else "stream_rmsnorm",
                   _beat_fields(cfg, NORM_INPUT.bits), lanes * out_bits, bits_for(lanes),
                   param=tuple(params))


def norm_shape(cfg: RtlConfig, *, centred: bool) -> OutputShape:
    return OutputShape(cfg.stream_lanes, cfg.out_bits if centred else cfg.rmsnorm_out_bits,
                       signed=True)


def norm_batch(cfg: RtlConfig, groups: list[Group], *, centred: bool) -> Batch:
    """Per group: the layer's parameters, beat by beat, then its rows. A row whose golden
    result leaves int32 before the requantization (the golden model refuses it) is left out."""
    refuse_long_rows([len(r) for _, rows in groups for r in rows], cfg.max_row)
    harness, lanes, batch = norm_harness(cfg, centred=centred), cfg.stream_lanes, Batch()
    for unit, rows in groups:
        gamma = unit.gamma.tolist()
        beta = unit.beta.tolist() if centred else []
        for b in range(beats(len(gamma), lanes)):
            chunk = slice(b * lanes, (b + 1) * lanes)
            batch.stimulus.param(
                harness, par_addr=b, par_gamma=pack(gamma[chunk], GAMMA_BITS),
                par_beta=pack(beta[chunk], 32) if centred else 0, eps=unit.eps,
                rq_m=unit.requant.m, rq_shift=unit.requant.shift)
        for row in rows:
            try:
                want = unit(torch.tensor([row]))[0].tolist()
            except DatapathOverflow:
                continue
            add_row(batch, harness, row, lanes=lanes, bits=NORM_INPUT.bits, expected=want)
    return batch


def _norm_unit(cfg: RtlConfig, length: int, rng: random.Random, *, centred: bool):
    """A layer's parameters: half from float gamma and beta as `build` makes them (a real
    layer's), half raw integers over their whole ranges."""
    gen = _generator(rng)
    out = IntRange(cfg.out_bits if centred else cfg.rmsnorm_out_bits)
    if rng.random() < 0.5:
        gamma = 1 + 0.3 * torch.randn(length, generator=gen, dtype=torch.float64)
        scale_in = 2.0 ** -rng.randint(6, 16)
        scale_out = rng.uniform(2, 8) / 127 / 2 ** (out.bits - 8)
        if not centred:
            return replace(IRMSNorm.build(gamma, scale_in, scale_out), out=out)
        beta = 0.2 * torch.randn(length, generator=gen, dtype=torch.float64)
        return ILayerNorm.build(gamma, beta, scale_in, scale_out, out=out)
    g_top = (1 << (GAMMA_BITS - 1)) - 1
    gamma_q = torch.randint(-g_top, g_top + 1, (length,), generator=gen)
    requant = Dyadic(rng.randint(1 << 29, (1 << 31) - 1), rng.randint(38, 52))
    eps = rng.choice((0, rng.randint(0, 1 << 20), (1 << 32) - 1, rng.randint(1 << 32, 1 << 40),
                      (1 << EPS_BITS) - 1))
    if not centred:
        return IRMSNorm(gamma_q, eps, requant, out)
    beta_q = torch.randint(-(1 << 28), 1 << 28, (length,), generator=gen)
    return ILayerNorm(gamma_q, beta_q, eps, requant, out)


def norm_values(length: int, rng: random.Random) -> list[int]:
    """A residual-stream row in int24: a spread of 2^2 to 2^20, an offset, a few outlier
    channels up to 50x the rest."""
    gen = _generator(rng)
    sigma = 2.0 ** rng.randint(2, 20)
    row = torch.randn(length, generator=gen, dtype=torch.float64) * sigma
    row += rng.uniform(-3, 3) * sigma
    for _ in range(rng.randint(0, 3)):
        row[rng.randrange(length)] *= rng.uniform(5, 50)
    return torch.round(row).clamp(NORM_INPUT.low, NORM_INPUT.high).long().tolist()


def norm_groups(cfg: RtlConfig, rng: random.Random, lengths: list[int], *,
                centred: bool) -> list[Group]:
    """Rows of the given lengths, in groups of one to eight rows per layer."""
    groups, i = [], 0
    while i < len(lengths):
        take = rng.randint(1, 8)
        length = lengths[i]
        unit = _norm_unit(cfg, length, rng, centred=centred)
        groups.append((unit, [norm_values(length, rng) for _ in lengths[i:i + take]]))
        i += take
    return groups


def norm_edges(cfg: RtlConfig, rng: random.Random, *, centred: bool) -> list[Group]:
    groups = []
    for n in _edge_lengths(cfg):
        rows = _extremes(n, NORM_INPUT.low, NORM_INPUT.high, rng) + [[0] * n,
                                                                      norm_values(n, rng)]
        groups.append((_norm_unit(cfg, n, rng, centred=centred), rows))
    return groups


# --- SiLU ------------------------------------------------------------------------------------

def silu_sigmoid(cfg: RtlConfig) -> ISigmoid:
    """The sigmoid the SiLU unit computes: i-exp at the input scale made `silu_shift` bits
    coarser, as intexec's Llama MLP builds it."""
    return ISigmoid.build(cfg.silu_input_scale * 2**cfg.silu_shift, SIGMOID_BITS)


def silu_harness(cfg: RtlConfig) -> Harness:
    lanes = cfg.stream_lanes
    return Harness("stream_silu", _beat_fields(cfg, cfg.silu_bits), lanes * 32,
                   bits_for(lanes))


def silu_shape(cfg: RtlConfig) -> OutputShape:
    return OutputShape(cfg.stream_lanes, 32, signed=True)


def silu_batch(cfg: RtlConfig, rows: Rows) -> Batch:
    refuse_long_rows([len(r) for r in rows], cfg.max_row)
    harness, sigmoid, batch = silu_harness(cfg), silu_sigmoid(cfg), Batch()
    flat = i_silu(torch.tensor([v for row in rows for v in row]), sigmoid,
                  cfg.silu_shift).tolist()
    start = 0
    for row in rows:
        want, start = flat[start:start + len(row)], start + len(row)
        add_row(batch, harness, row, lanes=cfg.stream_lanes, bits=cfg.silu_bits, expected=want)
    return batch


def silu_rows(cfg: RtlConfig, rng: random.Random, lengths: list[int]) -> Rows:
    """Gate activations at the unit's input scale: normal, spread 0.5 to 6 in float."""
    gen, top = _generator(rng), (1 << (cfg.silu_bits - 1)) - 1
    rows = []
    for length in lengths:
        row = torch.randn(length, generator=gen, dtype=torch.float64) * rng.choice(
            (0.5, 2.0, 6.0)) / cfg.silu_input_scale
        rows.append(torch.round(row).clamp(-top - 1, top).long().tolist())
    return rows


def silu_edges(cfg: RtlConfig, rng: random.Random) -> Rows:
    """Every input value once (in rows of max_row), then the shared edge rows."""
    top = (1 << (cfg.silu_bits - 1)) - 1
    every = list(range(-top - 1, top + 1))
    rows = [every[i:i + cfg.max_row] for i in range(0, len(every), cfg.max_row)]
    for n in _edge_lengths(cfg):
        rows += _extremes(n, -top - 1, top, rng)
    return rows

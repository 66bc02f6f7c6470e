"""Rows for the per-head streaming units: rotary (one head vector of `rotary_dim` int8 values
at a position) and the attention tile (one query row's int32 scores against a v matrix shared
by a group of query rows), with their golden answers from `hw.intops`.
"""

from __future__ import annotations

import random

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intops import IExp, IRotary
from mfmaccel.hw.intops.online_softmax import tiled_attention
from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.signals import pack
from mfmaccel.hw.rtl.stream_attention import attention_out_bits
from mfmaccel.hw.rtl.stream_cases import Batch, OutputShape, add_row, refuse_long_rows
from mfmaccel.hw.rtl.stream_common import bits_for
from mfmaccel.hw.rtl.stream_elementwise import TABLE_BITS
from mfmaccel.hw.rtl.stream_rows import INT32_TOP, softmax_rows
from mfmaccel.hw.rtl.testbench_stream import Field, Harness, Table

ROPE_BASE = 10_000.0  # Llama's default rotary base
Vectors = list[tuple[int, list[int]]]  # (position, head vector)
AttentionGroup = tuple[torch.Tensor, list[list[int]]]  # (v: keys x D int8, score rows)


# --- rotary ----------------------------------------------------------------------------------

def rotary_tables(dim: int, positions: int, base: float = ROPE_BASE) -> IRotary:
    """The integer cos/sin tables of a Llama rotary embedding for positions 0..positions-1
    (HF's layout: the frequencies repeated over both halves of the head dimension), as
    `IRotary.build` makes them."""
    inverse = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = torch.outer(torch.arange(positions, dtype=torch.float64), inverse)
    angles = torch.cat([angles, angles], dim=-1)
    return IRotary.build(angles.cos(), angles.sin())


def rotary_harness(cfg: RtlConfig) -> Harness:
    lanes = cfg.stream_lanes
    beat = (Field("in_data", lanes * cfg.in_bits), Field("in_count", bits_for(lanes)),
            Field("in_last", 1))
    param = (Field("par_addr", bits_for(cfg.rotary_dim // lanes - 1)),
             Field("par_cos", lanes * TABLE_BITS), Field("par_sin", lanes * TABLE_BITS))
    return Harness("stream_rotary", beat, lanes * (cfg.in_bits + 2), bits_for(lanes),
                   param=param)


def rotary_shape(cfg: RtlConfig) -> OutputShape:
    return OutputShape(cfg.stream_lanes, cfg.in_bits + 2, signed=True)


def _refuse_vectors(cfg: RtlConfig, vectors: Vectors) -> None:
    for position, vector in vectors:
        if len(vector) != cfg.rotary_dim:
            raise UserInputError(f"a head vector of {len(vector)} elements does not match "
                                 f"rotary_dim={cfg.rotary_dim}; generate the unit with "
                                 f"rotary_dim={len(vector)} (a multiple of "
                                 f"{2 * cfg.stream_lanes})")
        if position < 0:
            raise UserInputError(f"position {position} is negative; positions start at 0")


def rotary_batch(cfg: RtlConfig, vectors: Vectors) -> Batch:
    """The vectors in order; before each run of vectors at a new position, that position's
    cos and sin (a beat of lanes per write)."""
    _refuse_vectors(cfg, vectors)
    harness, lanes, batch = rotary_harness(cfg), cfg.stream_lanes, Batch()
    if not vectors:
        return batch
    rotary = rotary_tables(cfg.rotary_dim, max(p for p, _ in vectors) + 1)
    want = rotary(torch.tensor([v for _, v in vectors]),
                  torch.tensor([p for p, _ in vectors])).tolist()
    current = None
    for (position, vector), expected in zip(vectors, want, strict=True):
        if position != current:
            cos, sin = rotary.cos[position].tolist(), rotary.sin[position].tolist()
            for b in range(cfg.rotary_dim // lanes):
                chunk = slice(b * lanes, (b + 1) * lanes)
                batch.stimulus.param(harness, par_addr=b, par_cos=pack(cos[chunk], TABLE_BITS),
                                     par_sin=pack(sin[chunk], TABLE_BITS))
            current = position
        add_row(batch, harness, vector, lanes=lanes, bits=cfg.in_bits, expected=expected)
    return batch


def rotary_vectors(cfg: RtlConfig, rng: random.Random, count: int,
                   context: int = 2048) -> Vectors:
    """q and k head vectors in int8 (a spread of 8 to 60 steps), 1 to 12 heads per token at
    positions drawn from 0..context-1."""
    gen = torch.Generator().manual_seed(rng.randrange(1 << 62))
    vectors: Vectors = []
    while len(vectors) < count:
        position = rng.randrange(context)
        for _ in range(min(rng.randint(1, 12), count - len(vectors))):
            row = torch.randn(cfg.rotary_dim, generator=gen, dtype=torch.float64) * rng.choice(
                (8.0, 25.0, 60.0))
            vectors.append((position, torch.round(row).clamp(-128, 127).long().tolist()))
    return vectors


def rotary_edges(cfg: RtlConfig, rng: random.Random) -> Vectors:
    """Extreme vectors at positions 0, 1 and 8,191 (a long context), then a few random."""
    dim = cfg.rotary_dim
    rows = [[127] * dim, [-128] * dim, [127 if i % 2 else -128 for i in range(dim)],
            [0] * dim, [-128] * (dim // 2) + [127] * (dim // 2)]
    return [(p, row) for p in (0, 1, 8191) for row in rows] + rotary_vectors(cfg, rng, 4)


# --- attention tile --------------------------------------------------------------------------

def attention_harness(cfg: RtlConfig) -> Harness:
    lanes = cfg.stream_lanes
    return Harness("stream_attention", (Field("in_score", cfg.acc_bits), Field("in_last", 1)),
                   lanes * attention_out_bits(cfg), bits_for(lanes),
                   table=Table("in_v", cfg.attn_head_dim * cfg.in_bits, cfg.max_row))


def attention_shape(cfg: RtlConfig) -> OutputShape:
    return OutputShape(cfg.stream_lanes, attention_out_bits(cfg), signed=True)


def attention_batch(cfg: RtlConfig, groups: list[AttentionGroup]) -> Batch:
    """Per group: its v rows into the bench's table, then its query rows (one key per beat)."""
    refuse_long_rows([v.shape[0] for v, _ in groups], cfg.max_row)
    harness, batch = attention_harness(cfg), Batch()
    exp = IExp.build(cfg.exp_input_scale)
    for v, rows in groups:
        for key, row in enumerate(v.tolist()):
            batch.stimulus.table(harness, key, pack(row, cfg.in_bits))
        want = tiled_attention(torch.tensor(rows), v, exp, cfg.attn_tile,
                               cfg.softmax_bits).tolist()
        for scores, expected in zip(rows, want, strict=True):
            for j, score in enumerate(scores):
                batch.stimulus.beat(harness, in_score=score, in_last=int(j == len(scores) - 1))
            batch.stimulus.rows += 1
            batch.expected.append(expected)
            batch.lengths.append(len(scores))
    return batch


def _values(cfg: RtlConfig, keys: int, rng: random.Random) -> torch.Tensor:
    gen = torch.Generator().manual_seed(rng.randrange(1 << 62))
    v = torch.randn(keys, cfg.attn_head_dim, generator=gen, dtype=torch.float64)
    return torch.round(v * rng.choice((10.0, 40.0, 100.0))).clamp(-128, 127).long()


def attention_groups(cfg: RtlConfig, rng: random.Random, lengths: list[int],
                     per_group: int = 16) -> list[AttentionGroup]:
    """Query rows of the given key counts, `per_group` rows sharing one v (one head's keys);
    their scores are `softmax_rows`' realistic scores."""
    groups = []
    for start in range(0, len(lengths), per_group):
        keys = lengths[start]
        count = len(lengths[start:start + per_group])
        groups.append((_values(cfg, keys, rng), softmax_rows(cfg, rng, [keys] * count)))
    return groups


def attention_edges(cfg: RtlConfig, rng: random.Random) -> list[AttentionGroup]:
    """One key, a tile, a tile and one, max_row keys; scores rising (the maximum moves up
    every tile: every rescale), falling, all equal, int32 extremes, one huge outlier last."""
    tile, q_ln2 = cfg.attn_tile, IExp.build(cfg.exp_input_scale).q_ln2
    groups = []
    for keys in sorted({1, tile, tile + 1, min(cfg.max_row, 3 * tile + 5), cfg.max_row}):
        keys = min(keys, cfg.max_row)
        rising = [j * q_ln2 // 3 for j in range(keys)]
        spike = [-INT32_TOP - 1] * keys
        spike[-1] = INT32_TOP
        rows = [rising, rising[::-1], [7] * keys, [INT32_TOP] * keys, spike,
                [(-1) ** j * INT32_TOP for j in range(keys)]]
        rows += softmax_rows(cfg, rng, [keys] * 2)
        v = _values(cfg, keys, rng)
        groups += [(v, rows), (torch.full((keys, cfg.attn_head_dim), -128), rows[:3])]
    return groups


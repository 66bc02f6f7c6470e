"""Every streaming unit checked against its golden model at scale: the registry of what each
unit's bench needs, and `verify_stream`, which writes the unit, builds random and edge rows,
simulates them (Icarus, or Verilator when asked: a hundred times faster once compiled) and
compares row by row, cycles included.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mfmaccel.errors import UserInputError
from mfmaccel.hw.rtl import stream_heads as heads
from mfmaccel.hw.rtl import stream_rows as rows
from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.stream_attention import stream_attention_cycles, stream_attention_verilog
from mfmaccel.hw.rtl.stream_cases import Batch, Outcome, OutputShape, check, row_lengths
from mfmaccel.hw.rtl.stream_elementwise import (
    stream_rotary_cycles,
    stream_rotary_verilog,
    stream_silu_cycles,
    stream_silu_verilog,
)
from mfmaccel.hw.rtl.stream_norm import (
    stream_layernorm_cycles,
    stream_layernorm_verilog,
    stream_rmsnorm_cycles,
    stream_rmsnorm_verilog,
)
from mfmaccel.hw.rtl.stream_softmax import stream_softmax_cycles, stream_softmax_verilog
from mfmaccel.hw.rtl.testbench_stream import Harness

Lengths = list[int]


@dataclass(frozen=True)
class StreamUnit:
    verilog: Callable[[RtlConfig], str]
    harness: Callable[[RtlConfig], Harness]
    shape: Callable[[RtlConfig], OutputShape]
    cycles: Callable[[RtlConfig, int], int]
    random: Callable[[RtlConfig, random.Random, Lengths], Batch]  # rows of these lengths
    edges: Callable[[RtlConfig, random.Random], Batch]


def _norm(centred: bool) -> StreamUnit:
    return StreamUnit(
        stream_layernorm_verilog if centred else stream_rmsnorm_verilog,
        lambda cfg: rows.norm_harness(cfg, centred=centred),
        lambda cfg: rows.norm_shape(cfg, centred=centred),
        stream_layernorm_cycles if centred else stream_rmsnorm_cycles,
        lambda cfg, rng, n: rows.norm_batch(
            cfg, rows.norm_groups(cfg, rng, n, centred=centred), centred=centred),
        lambda cfg, rng: rows.norm_batch(cfg, rows.norm_edges(cfg, rng, centred=centred),
                                         centred=centred))


STREAM_UNITS: dict[str, StreamUnit] = {
    "stream_softmax": StreamUnit(
        stream_softmax_verilog, rows.softmax_harness, rows.softmax_shape, stream_softmax_cycles,
        lambda cfg, rng, n: rows.softmax_batch(cfg, rows.softmax_rows(cfg, rng, n)),
        lambda cfg, rng: rows.softmax_batch(cfg, rows.softmax_edges(cfg, rng))),
    "stream_layernorm": _norm(True),
    "stream_rmsnorm": _norm(False),
    "stream_silu": StreamUnit(
        stream_silu_verilog, rows.silu_harness, rows.silu_shape, stream_silu_cycles,
        lambda cfg, rng, n: rows.silu_batch(cfg, rows.silu_rows(cfg, rng, n)),
        lambda cfg, rng: rows.silu_batch(cfg, rows.silu_edges(cfg, rng))),
    "stream_rotary": StreamUnit(
        stream_rotary_verilog, heads.rotary_harness, heads.rotary_shape, stream_rotary_cycles,
        lambda cfg, rng, n: heads.rotary_batch(cfg, heads.rotary_vectors(cfg, rng, len(n))),
        lambda cfg, rng: heads.rotary_batch(cfg, heads.rotary_edges(cfg, rng))),
    "stream_attention": StreamUnit(
        stream_attention_verilog, heads.attention_harness, heads.attention_shape,
        stream_attention_cycles,
        lambda cfg, rng, n: heads.attention_batch(cfg, heads.attention_groups(cfg, rng, n)),
        lambda cfg, rng: heads.attention_batch(cfg, heads.attention_edges(cfg, rng))),
}


def merged(*batches: Batch) -> Batch:
    """One stimulus carrying every batch's words and rows in order."""
    out = Batch()
    for batch in batches:
        out.stimulus.extend(batch.stimulus)
        out.expected += batch.expected
        out.lengths += batch.lengths
    return out


def unit_batch(name: str, cfg: RtlConfig, *, rows_count: int, seed: int = 0,
               edges: bool = True, lengths: tuple[int, int] = (64, 1024)) -> Batch:
    """`rows_count` random rows of lengths drawn from `lengths` (clipped to max_row), after
    the unit's edge rows when `edges`."""
    unit = _unit(name)
    rng = random.Random(seed)
    drawn = row_lengths(cfg, rows_count, rng, *lengths)
    parts = [unit.edges(cfg, rng)] if edges else []
    return merged(*parts, unit.random(cfg, rng, drawn) if drawn else Batch())


def verify_stream(name: str, cfg: RtlConfig, work: Path, batch: Batch, *,
                  stall: bool = False, seed: int = 0, simulator: str = "icarus",
                  source: Path | None = None) -> Outcome:
    """Simulate `batch` on unit `name` (its Verilog written into `work` unless `source` is
    given) and compare with the golden model row by row and, without stalls, every row's
    cycles with the unit's formula."""
    unit = _unit(name)
    if source is None:
        work.mkdir(parents=True, exist_ok=True)
        source = work / f"{name}.v"
        source.write_text(unit.verilog(cfg))
    return check(batch, unit.harness(cfg), unit.shape(cfg), [source], work / "sim",
                 cycles=lambda n: unit.cycles(cfg, n), stall=stall, seed=seed,
                 simulator=simulator)


def simulate_stream(source: Path, build_dir: Path, *, vectors: int, seed: int,
                    cfg: RtlConfig) -> tuple[int, int]:
    """(benches run, failed) like `verify.simulate`: the unit in `source` on its edge rows and
    random rows of 64..1024 elements, about `vectors` elements in all, under Icarus."""
    batch = unit_batch(source.stem, cfg, rows_count=max(1, vectors // 544), seed=seed)
    outcome = verify_stream(source.stem, cfg, Path(build_dir), batch, seed=seed,
                            source=source)
    return 1, int(bool(outcome.mismatches or outcome.cycle_errors))


def _unit(name: str) -> StreamUnit:
    if name not in STREAM_UNITS:
        raise UserInputError(f"no streaming unit '{name}'; units: {', '.join(STREAM_UNITS)}")
    return STREAM_UNITS[name]

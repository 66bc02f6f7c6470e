"""Checking a streaming unit against its golden model: rows turned into bench words, the
golden model's answer for each, and the comparison of what the simulation delivered.

Each unit's module of cases (`stream_rows` for softmax, the norms and SiLU; `stream_heads` for
rotary and the attention tile) builds a `Batch`: the stimulus, the expected output row for every
input row, and the row's length as its cycle formula counts it. `check` runs it and counts
mismatching rows; `refuse_long_rows` is the host's guard for rows the unit cannot hold.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mfmaccel.errors import UserInputError
from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.signals import pack
from mfmaccel.hw.rtl.testbench_stream import Harness, RowOut, Stimulus, run_bench


@dataclass
class Batch:
    stimulus: Stimulus = field(default_factory=Stimulus)
    expected: list[list[int]] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)  # what the cycle formula takes


@dataclass(frozen=True)
class Outcome:
    rows: int
    mismatches: int
    first_mismatch: str  # "" when every row matched
    lengths: list[int]
    cycles: list[int]
    cycle_errors: int  # rows whose cycles differ from the formula (0 when stalled: not checked)
    seconds: float


def refuse_long_rows(lengths: Sequence[int], limit: int, parameter: str = "max_row") -> None:
    """A row longer than the unit holds: one line naming the parameter and the value that
    works (the CLI exits with 2)."""
    longest = max(lengths, default=0)
    if longest > limit:
        raise UserInputError(f"a row of {longest} elements exceeds {parameter}={limit}; "
                             f"generate the unit with {parameter} >= {longest}")


def add_row(batch: Batch, harness: Harness, row: Sequence[int], *, lanes: int, bits: int,
            expected: list[int], **side: int) -> None:
    """The beats of one input row (`bits` per element, `lanes` per beat); `side` ports are
    driven with every beat."""
    for start in range(0, len(row), lanes):
        chunk = row[start:start + lanes]
        batch.stimulus.beat(harness, in_data=pack(list(chunk), bits), in_count=len(chunk),
                            in_last=int(start + lanes >= len(row)), **side)
    batch.stimulus.rows += 1
    batch.expected.append(expected)
    batch.lengths.append(len(row))


def unpack_row(out: RowOut, *, lanes: int, bits: int, signed: bool) -> list[int]:
    """The elements of an output row: `out_count` lanes of each beat."""
    mask, sign = (1 << bits) - 1, 1 << (bits - 1)
    values = []
    for data, count in out.beats:
        for lane in range(count):
            v = (data >> (lane * bits)) & mask
            values.append(v - (1 << bits) if signed and v & sign else v)
    return values


@dataclass(frozen=True)
class OutputShape:
    lanes: int
    bits: int
    signed: bool


def check(batch: Batch, harness: Harness, shape: OutputShape, sources: Sequence[Path],
          work: Path, *, cycles: Callable[[int], int], stall: bool = False,
          seed: int = 0, simulator: str = "icarus") -> Outcome:
    """Simulate `batch` and compare every row with its expected output, and (without stalls)
    every row's cycles with the formula `cycles(length)`."""
    start = time.perf_counter()
    outs = run_bench(harness, batch.stimulus, sources, work, stall=stall, seed=seed,
                     simulator=simulator)
    seconds = time.perf_counter() - start
    mismatches, first, cycle_errors = 0, "", 0
    for i, (out, want) in enumerate(zip(outs, batch.expected, strict=True)):
        got = unpack_row(out, lanes=shape.lanes, bits=shape.bits, signed=shape.signed)
        if got != want:
            mismatches += 1
            if not first:
                bad = next((j for j, (g, w) in enumerate(zip(got, want, strict=False)) if g != w),
                           min(len(got), len(want)))
                first = (f"row {i} (length {batch.lengths[i]}): element {bad} rtl "
                         f"{got[bad:bad + 4]} golden {want[bad:bad + 4]} "
                         f"({len(got)} vs {len(want)} elements)")
        if not stall and out.cycles != cycles(batch.lengths[i]):
            cycle_errors += 1
            if not first:
                first = (f"row {i} (length {batch.lengths[i]}): {out.cycles} cycles, formula "
                         f"{cycles(batch.lengths[i])}")
    return Outcome(len(outs), mismatches, first, batch.lengths, [o.cycles for o in outs],
                   cycle_errors, seconds)


def row_lengths(cfg: RtlConfig, count: int, rng, low: int = 64, high: int = 1024) -> list[int]:
    """`count` lengths drawn uniformly from low..high, both clipped to max_row."""
    high = min(high, cfg.max_row)
    low = min(low, high)
    return [rng.randint(low, high) for _ in range(count)]

"""The generated RTL at one configuration, measured: yosys cells per unit (an area proxy, with
the units each instantiates) and the simulated latency of tiled GEMMs on the GEMM engine.

The GEMM engine's cycles come out of the Icarus simulation of its cocotb bench (every GEMM
also checked bit for bit and against `hw.rtl.gemm.gemm_cycles`); reported per GEMM with the
MACs per cycle and the array utilisation they imply. These are the figures the performance
model of the design-space exploration must reproduce. Prints JSON.

Usage: python benchmarks/rtl_units.py [--rows 4] [--cols 4] [--vectors 2000] [--no-synth]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from mfmaccel.hw.rtl.catalog import STREAMING
from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.verify import simulate, synthesis_cells, write_rtl


@contextmanager
def simulator_log_to_stderr():
    """The simulator writes its log to our stdout; keep stdout for the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def gemm_latencies(source: Path, cfg: RtlConfig, vectors: int, work: Path) -> list[dict]:
    record = work / "gemm_cycles.json"
    with simulator_log_to_stderr():
        runs, failed = simulate(source, work / "build", vectors=vectors, cfg=cfg, record=record)
    if failed:
        raise SystemExit("the GEMM engine failed its bench; run tests/hw/rtl to see why")
    rows = json.loads(record.read_text())
    for row in rows:
        macs = row["m"] * row["n"] * row["k"]
        row["macs_per_cycle"] = macs / row["cycles"]
        row["utilisation"] = macs / (row["cycles"] * cfg.rows * cfg.cols)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--cols", type=int, default=4)
    parser.add_argument("--vectors", type=int, default=2000)
    parser.add_argument("--no-synth", action="store_true")
    args = parser.parse_args()
    cfg = RtlConfig(rows=args.rows, cols=args.cols)
    with tempfile.TemporaryDirectory() as tmp:
        sources = {p.stem: p for p in write_rtl(Path(tmp) / "rtl", cfg)}
        cells, seconds = {}, {}
        if not args.no_synth:
            for unit, source in sources.items():
                if unit in STREAMING:  # row buffers in flip-flops: see catalog.STREAMING
                    continue
                start = time.perf_counter()
                cells[unit] = synthesis_cells(source)
                seconds[unit] = time.perf_counter() - start
        latencies = gemm_latencies(sources["gemm"], cfg, args.vectors, Path(tmp))
    print(json.dumps({"config": dataclasses.asdict(cfg), "yosys_cells": cells,
                      "synthesis_seconds": seconds, "gemm": latencies}, indent=1))


if __name__ == "__main__":
    main()

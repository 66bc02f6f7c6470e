"""The streaming RTL units at scale: each simulated on at least 10,000 rows (softmax, LayerNorm,
RMSNorm and SiLU rows of 64..1,024 elements, rotary head vectors of 64, attention query rows of
64..1,024 keys against v of head width 64; plus every unit's edge rows) and compared with its
`hw.intops` golden model row by row, and every row's simulated cycles with the unit's cycle
formula. Prints JSON: per unit the rows, their lengths, mismatching rows, rows whose cycles
differ from the formula, cycles per row at representative lengths (formula, and the measured
rows nearest to them), elements per cycle, and the seconds spent building the stimulus and
building + running the simulation.

Verilator (compiled once per unit, ~100x faster than Icarus once built) is the default where it
is installed; `--simulator icarus` runs the same benches under Icarus (minutes per unit).

Usage: python benchmarks/rtl_stream.py [--rows 10000] [--units stream_softmax ...]
       [--simulator verilator|icarus] [--record]
`--record` also writes the JSON to benchmarks/results/<date>-rtl-stream[-options]-at-<commit>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.stream_verify import STREAM_UNITS, unit_batch, verify_stream

ROWS = 10_000
LENGTHS = (64, 128, 256, 512, 768, 1024)
FORMULAS = {
    "stream_softmax": "3 ceil(n / lanes) + 3",
    "stream_layernorm": "2 ceil(n / lanes) + 164 (max_row 1024)",
    "stream_rmsnorm": "2 ceil(n / lanes) + 125 (max_row 1024)",
    "stream_silu": "ceil(n / lanes) + 1",
    "stream_rotary": "2 rotary_dim / lanes + 2",
    "stream_attention": "2 S + ceil(S / tile) (D / lanes + 1) + D / lanes + 1",
}


def cycles_table(name: str, cfg: RtlConfig, lengths: list[int], cycles: list[int]) -> dict:
    """Per representative length: the formula's cycles and the measured row nearest to it."""
    unit, table = STREAM_UNITS[name], {}
    for length in ([cfg.rotary_dim] if name == "stream_rotary" else LENGTHS):
        nearest = min(range(len(lengths)), key=lambda i: abs(lengths[i] - length))
        table[str(length)] = {"formula": unit.cycles(cfg, length),
                              "measured_row": [lengths[nearest], cycles[nearest]]}
    return table


def measure(name: str, cfg: RtlConfig, rows: int, simulator: str, work: Path) -> dict:
    started = time.perf_counter()
    batch = unit_batch(name, cfg, rows_count=rows, seed=0)
    stimulus_seconds = time.perf_counter() - started
    outcome = verify_stream(name, cfg, work / name, batch, simulator=simulator)
    elements = sum(outcome.lengths)
    report = {
        "rows": outcome.rows, "random_rows": rows, "edge_rows": outcome.rows - rows,
        "lengths": {"min": min(outcome.lengths), "max": max(outcome.lengths),
                    "mean": round(elements / outcome.rows, 1)},
        "mismatching_rows": outcome.mismatches, "cycle_formula_mismatches": outcome.cycle_errors,
        "cycle_formula": FORMULAS[name],
        "cycles_per_row": cycles_table(name, cfg, outcome.lengths, outcome.cycles),
        "simulated_cycles": sum(outcome.cycles),
        "elements_per_cycle": round(elements / sum(outcome.cycles), 3),
        "stimulus_seconds": round(stimulus_seconds, 1),
        "simulation_seconds": round(outcome.seconds, 1),
    }
    if outcome.first_mismatch:
        report["first_mismatch"] = outcome.first_mismatch
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS, help="random rows per unit")
    parser.add_argument("--units", nargs="+", default=list(STREAM_UNITS),
                        choices=list(STREAM_UNITS))
    parser.add_argument("--simulator", choices=("verilator", "icarus"),
                        default="verilator" if shutil.which("verilator") else "icarus")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    cfg = RtlConfig()
    report = {"command": "python benchmarks/rtl_stream.py " + " ".join(sys.argv[1:]),
              "commit": recordfile.commit(), "simulator": args.simulator,
              "config": dataclasses.asdict(cfg), "units": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.units:
            report["units"][name] = measure(name, cfg, args.rows, args.simulator, Path(tmp))
            unit = report["units"][name]
            print(f"{name}: {unit['rows']} rows, {unit['mismatching_rows']} mismatching, "
                  f"{unit['cycle_formula_mismatches']} off the cycle formula, "
                  f"{unit['simulation_seconds']} s", file=sys.stderr)
    report["seconds"] = round(time.perf_counter() - started, 1)
    parts = ["rtl-stream"]
    if args.rows != ROWS:
        parts.append(f"rows{args.rows}")
    if args.units != list(STREAM_UNITS):
        parts.append("-".join(u.removeprefix("stream_") for u in args.units))
    if args.simulator != "verilator":
        parts.append(args.simulator)
    recordfile.emit(report, recordfile.record_path(parts, report["commit"])
                    if args.record else None)
    failed = any(u["mismatching_rows"] or u["cycle_formula_mismatches"]
                 for u in report["units"].values())
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

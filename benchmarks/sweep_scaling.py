"""A design-space sweep (`hw.dse.explore`) on one worker against a local Dask cluster
(`mfmaccel.parallel`). Prints JSON.

Per repeat, in an order that rotates every repeat:
- `one`: the sweep in this process (`--workers 1`);
- `cluster`: `Executor(workers=N)`, as `mfmaccel hw dse --workers N` runs it: the cluster's
  start (N worker processes, each importing mfmaccel's hw layer and torch) and close included;
- `cluster_started`: the same sweep on a cluster started beforehand and warmed up with a small
  sweep (`parallel.local_cluster`, as a cluster someone keeps running is used through
  `--scheduler`): the start excluded, reported apart as `cluster_start_seconds`.

Reports each variant's seconds, medians over repeats, one/cluster speedups, and whether every
run's points and front are identical byte for byte to the first one-worker run (they must be).
The default sweep (RoBERTa-base by its public config, no weights read; the default design grid
at four weight bit-widths and four bandwidths: 62,208 designs) is sized to take tens of seconds
on one worker; `--smoke` sweeps 128 designs to check the script runs.

Usage: python benchmarks/sweep_scaling.py [--model roberta-base] [--seq-len 128] [--workers 2]
       [--repeats 3] [--smoke] [--record]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from mfmaccel.threads import thread_environment, usable_cores

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from mfmaccel.hw.dse import DesignSpace, Exploration, explore  # noqa: E402
from mfmaccel.hw.trace import workload_for_spec  # noqa: E402
from mfmaccel.parallel import Executor, local_cluster  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from recordfile import commit, emit, record_path  # noqa: E402

SPACE = replace(DesignSpace(), weight_bits=(2, 3, 4, 8), bandwidth_gbs=(8.5, 25.6, 50, 100))
SMOKE = DesignSpace(rows=(8, 16), cols=(8, 16), a_buffer_kib=(32,), b_buffer_kib=(64, 256),
                    out_buffer_kib=(16, 64), bandwidth_gbs=(8.5, 25.6), clock_mhz=(200, 400),
                    vector_lanes=(16,), weight_bits=(4, 8))
WARM_UP = replace(SMOKE, rows=(8,), cols=(8,))  # imports the hw layer on every worker
VARIANTS = ("one", "cluster", "cluster_started")


def fingerprint(result: Exploration) -> str:
    """A digest of the sweep's output without its timings: what must not depend on who ran it."""
    output = json.dumps({"points": [p.to_dict() for p in result.points],
                         "front": [p.to_dict() for p in result.front],
                         "evaluated": result.evaluated, "infeasible": result.infeasible})
    return hashlib.sha256(output.encode()).hexdigest()


def timed(run) -> tuple[float, Exploration]:
    began = time.perf_counter()
    result = run()
    return time.perf_counter() - began, result


def run_variant(variant: str, workload, space: DesignSpace, workers: int
                ) -> tuple[float, Exploration, float | None]:
    """(seconds, result, seconds the cluster took to start and warm up, None without one)."""
    if variant == "one":
        return *timed(lambda: explore(workload, space)), None
    if variant == "cluster":
        executor = Executor(workers=workers)
        return *timed(lambda: explore(workload, space, executor=executor)), None
    began = time.perf_counter()
    with local_cluster(workers) as address:
        executor = Executor(scheduler=address)
        explore(workload, WARM_UP, executor=executor)
        start = time.perf_counter() - began
        return *timed(lambda: explore(workload, space, executor=executor)), start


def measure(args, workload, space: DesignSpace) -> dict:
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    starts: list[float] = []
    outputs: set[str] = set()
    for repeat in range(args.repeats):
        for variant in VARIANTS[repeat % 3:] + VARIANTS[:repeat % 3]:
            took, result, start = run_variant(variant, workload, space, args.workers)
            print(f"repeat {repeat}: {variant} {took:.2f} s", file=sys.stderr)
            seconds[variant].append(took)
            starts += [start] if start is not None else []
            outputs.add(fingerprint(result))
    medians = {v: statistics.median(s) for v, s in seconds.items()}
    return {"seconds": seconds, "median_seconds": medians,
            "cluster_start_seconds": statistics.median(starts),
            "speedup_with_start": medians["one"] / medians["cluster"],
            "speedup_without_start": medians["one"] / medians["cluster_started"],
            "identical": len(outputs) == 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="roberta-base")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="a few dozen designs")
    parser.add_argument("--record", action="store_true", help="also write the report")
    args = parser.parse_args()
    space = SMOKE if args.smoke else SPACE
    workload = workload_for_spec(args.model, args.seq_len)
    report = {"commit": commit(), "usable_cores": usable_cores(),
              "load_average_at_start": os.getloadavg(), "model": args.model,
              "seq_len": args.seq_len, "space_size": space.size, "workers": args.workers,
              "repeats": args.repeats, **measure(args, workload, space),
              "load_average_at_end": os.getloadavg()}
    parts = ["sweep-scaling", args.model, f"L{args.seq_len}", f"w{args.workers}",
             f"r{args.repeats}", *(["smoke"] if args.smoke else [])]
    emit(report, record_path(parts, report["commit"]) if args.record else None)
    if not report["identical"]:
        sys.exit("the cluster's sweep differs from the one-worker sweep")


if __name__ == "__main__":
    main()

"""HumanEval's generation (`evaluate.codegen.code_completions`, what `mfmaccel eval --task
humaneval` generates: greedy, batches of 16 prompts sorted by length) on one worker against a
local Dask cluster whose workers each load the model by name (`mfmaccel.parallel`,
`models.source`). Prints JSON.

Per repeat, in an order that rotates every repeat:
- `one`: this process on one thread, what one worker computes (the model loaded beforehand);
- `cluster`: a local cluster of N workers, one thread each, started fresh for the repeat; its
  seconds include each worker loading the model (what `eval --workers N` pays besides the
  start), and the start itself (worker processes up, dask and torch imported) is reported
  apart as `cluster_start_seconds`;
- `threads`: this process at the machine's default thread count (`eval --workers 1`): the
  user's alternative to workers.

Reports each variant's seconds, medians over repeats, speedups of the cluster (with and without
its start) over one thread and over the default threads, whether every run of `one` and
`cluster` gave the same completions and token counts (they must), and whether `threads` did
too (fp32 sums may differ with the thread count; docs/sweeps.md). The sandboxed checks are not
timed: they run in the caller's thread pool whatever generates.

Usage: python benchmarks/humaneval_scaling.py [--model smollm2-135m] [--limit 64]
       [--max-new-tokens 128] [--workers 2] [--repeats 3] [--record]
Smoke run: --model tiny-llama --limit 2 --max-new-tokens 8 --repeats 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

from mfmaccel.threads import thread_environment, usable_cores

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import torch  # noqa: E402

from mfmaccel.data.code import humaneval_subset, load_humaneval  # noqa: E402
from mfmaccel.evaluate.codegen import CodeCompletions, code_completions  # noqa: E402
from mfmaccel.models import load_model  # noqa: E402
from mfmaccel.models.source import ModelSource  # noqa: E402
from mfmaccel.parallel import Executor, local_cluster  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from recordfile import commit, emit, record_path  # noqa: E402

VARIANTS = ("one", "cluster", "threads")


def fingerprint(completions: CodeCompletions) -> str:
    """A digest of what was generated: what must not depend on who generated it."""
    output = json.dumps({"texts": completions.texts, "tokens": completions.tokens},
                        sort_keys=True)
    return hashlib.sha256(output.encode()).hexdigest()


def timed(run) -> tuple[float, CodeCompletions]:
    began = time.perf_counter()
    result = run()
    return time.perf_counter() - began, result


def run_variant(variant: str, args, model, problems) -> tuple[float, CodeCompletions,
                                                                 float | None]:
    """(seconds, completions, seconds the cluster took to start; None without one)."""
    def generate(**where) -> CodeCompletions:
        return code_completions(model, problems, max_new_tokens=args.max_new_tokens, **where)

    if variant == "threads":
        return *timed(generate), None
    if variant == "one":
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return *timed(generate), None
        finally:
            torch.set_num_threads(threads)
    began = time.perf_counter()
    with local_cluster(args.workers) as address:
        start = time.perf_counter() - began
        executor = Executor(scheduler=address)
        return *timed(lambda: generate(executor=executor,
                                       source=ModelSource(args.model))), start


def measure(args, model, problems) -> dict:
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    starts: list[float] = []
    outputs: dict[str, set[str]] = {v: set() for v in VARIANTS}
    for repeat in range(args.repeats):
        for variant in VARIANTS[repeat % 3:] + VARIANTS[:repeat % 3]:
            took, result, start = run_variant(variant, args, model, problems)
            print(f"repeat {repeat}: {variant} {took:.2f} s", file=sys.stderr)
            seconds[variant].append(took)
            starts += [start] if start is not None else []
            outputs[variant].add(fingerprint(result))
    medians = {v: statistics.median(s) for v, s in seconds.items()}
    start = statistics.median(starts)
    with_start = medians["cluster"] + start
    return {"seconds": seconds, "median_seconds": medians, "cluster_start_seconds": start,
            "speedup_over_one_thread": medians["one"] / medians["cluster"],
            "speedup_over_one_thread_with_start": medians["one"] / with_start,
            "speedup_over_threads": medians["threads"] / medians["cluster"],
            "speedup_over_threads_with_start": medians["threads"] / with_start,
            "identical": len(outputs["one"] | outputs["cluster"]) == 1,
            "threads_identical": len(set().union(*outputs.values())) == 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--limit", type=int, default=64,
                        help="HumanEval problems (a subset; 16 to a job)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="also write the report")
    args = parser.parse_args()
    model = load_model(args.model)
    problems = humaneval_subset(load_humaneval(), args.limit)
    report = {"commit": commit(), "usable_cores": usable_cores(),
              "default_threads": torch.get_num_threads(),
              "load_average_at_start": os.getloadavg(), "model": args.model,
              "problems": len(problems), "max_new_tokens": args.max_new_tokens,
              "workers": args.workers, "repeats": args.repeats,
              **measure(args, model, problems), "load_average_at_end": os.getloadavg()}
    parts = ["humaneval-scaling", Path(args.model).name, f"n{len(problems)}",
             f"t{args.max_new_tokens}", f"w{args.workers}", f"r{args.repeats}"]
    emit(report, record_path(parts, report["commit"]) if args.record else None)
    if not report["identical"]:
        sys.exit("the cluster's completions differ from one worker's")


if __name__ == "__main__":
    main()

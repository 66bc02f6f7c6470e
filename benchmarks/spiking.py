"""Spiking minilm-l6 or medvlm's DINOv2 tower (issue 25, item 1): the static-scale integer
program run as a spiking network on real text or images. Prints JSON.

Per `--levels` (unit spikes a neuron may fire in one step; "none": any number, a graded
message), the run goes until no neuron fires (at most `--max-steps`) and records: the steps it
took to settle, whether the settled hidden states equal the integer program's bit for bit, the
cosine to float after each of `--steps` (the rate-coded approximation; minilm-l6: sentence
embeddings, medvlm: the tower's last hidden states per token) beside the integer program's
own, the spike rate, and the ACs the spikes cost against the integer program's MACs on the
same inputs (`--sentences` test paragraphs or `--images` test images).

Per `--activation-bits` b (every tensor a product reads at b bits, probabilities included), the
record also says whether the run equals the integer program after 2^b - 1 steps of unit spikes
(`window`, `exact_at_window`).

Usage: python benchmarks/spiking.py [--model minilm-l6] [--levels none 16 4]
       [--activation-bits none 8 6 4]
       [--sentences 8] [--images 8] [--calibration 64] [--max-steps 8192]
       [--steps 8 16 32 64 128 256] [--record]
`--record` also writes benchmarks/results/<date>-spiking[-options]-at-<commit>.json.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from mfmaccel.spiking.quality import spiking_for_spec

DEFAULTS = {"sentences": 8, "images": 8, "calibration": 64, "max_steps": 8192}
LEVELS = ("none", "16", "4")  # unit spikes (1) settle later still than 4 levels: ask for them


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--levels", nargs="+", default=list(LEVELS))
    parser.add_argument("--activation-bits", nargs="+", default=["none"],
                        help="bits of the tensors a product reads, each run at every --levels "
                             "(none: int8 with 12-bit probabilities)")
    parser.add_argument("--steps", nargs="+", type=int, default=[8, 16, 32, 64, 128, 256])
    for name, value in DEFAULTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=value)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    runs = []
    for bits_text, text in itertools.product(args.activation_bits, args.levels):
        levels = None if text == "none" else int(text)
        bits = None if bits_text == "none" else int(bits_text)
        started = time.perf_counter()
        print(f"{args.model}: activation bits {bits_text}, levels {text}", file=sys.stderr)
        found = spiking_for_spec(args.model, levels=levels, steps=args.steps,
                                 max_steps=args.max_steps, sentences=args.sentences,
                                 images=args.images, calibration=args.calibration,
                                 activation_bits=bits)
        runs.append({**found.to_dict(), "seconds": time.perf_counter() - started,
                     "accumulates_per_mac": found.accumulates / found.macs})
    report = {"model": args.model, "settings": {k: getattr(args, k) for k in DEFAULTS},
              "runs": runs}
    options = [f"{k.replace('_', '')}{getattr(args, k)}" for k, v in DEFAULTS.items()
               if getattr(args, k) != v]
    if tuple(args.levels) != LEVELS:
        options.insert(0, "levels" + "-".join(args.levels))
    if args.activation_bits != ["none"]:
        options.insert(0, "bits" + "-".join(args.activation_bits))
    if args.model != "minilm-l6":
        options.insert(0, args.model)
    path = recordfile.record_path(["spiking", *options], recordfile.commit()) \
        if args.record else None
    recordfile.emit(report, path)


if __name__ == "__main__":
    main()

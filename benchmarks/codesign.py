"""Co-design fronts (issue 24, item 5): weight bit-widths per block, and per linear, searched
together with the accelerator (`hw.codesign`) on smollm2-135m and on medvlm's DINOv2 vision
tower. Prints JSON.

One sensitivity per model (network, block and module tiers at 2, 3, 4, 6 and 8 bits: 6 gives
the mixtures a step between 4 and 8; the uniform points are every one of them) feeds a
co-design at each `--tiers` entry: "block" (all linears of a block share their bits) and
"module" (each linear may move one step from its block's choice).

smollm2-135m is priced on one decode step (`--seq-len 1`: one token against every weight,
where weight bytes matter most), its sensitivity measured on `--calib-tokens` tokens of the
corpus's train half and its checks on `--tokens` of the test half. medvlm's tower (the DINOv2
inside the VLM, read at the last block as its projector reads it) is priced on one image of
its processor's size, measured on `--calibration` medvqa2 train images and checked on
`--images` test images. Every design of a 288-point grid around the `edge` preset (array
8-64 x 8-64, B buffer 64 KiB-1 MiB, 8.5-100 GB/s, 200 or 800 MHz) prices every assignment.

For each uniform assignment the record lists its own design front and, per point, a mixed
point that dominates it at equal or better predicted quality (same design first) or none; the
checks quantize every uniform assignment and `--checks` mixed front ones (round to nearest,
packed) and measure the signal the sensitivity predicts on held-out data.

Default sizes keep the run near 20 minutes on 2 otherwise idle cores (much longer beside
other work): the sensitivity dominates (bit-widths x (blocks + 1) probes).

Usage: python benchmarks/codesign.py [--models smollm2-135m medvlm] [--weight-bits 2 3 4 6 8]
       [--tiers block module] [--calib-tokens 512] [--tokens 1024] [--calibration 16]
       [--images 32] [--checks 3] [--record]
`--record` also writes the JSON to benchmarks/results/<date>-codesign[-options]-at-<commit>.json
(options not at their default are named, e.g. `-bits2348`, `-calib1024`).
"""

from __future__ import annotations

import argparse
import os
import sys

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from mfmaccel.compress.sensitivity import measure_sensitivity
from mfmaccel.hw.codesign import bit_specs, codesign
from mfmaccel.hw.codesign_ladder import TIERS
from mfmaccel.hw.codesign_run import subject_for_spec
from mfmaccel.hw.dse import DesignSpace
from mfmaccel.parallel import Executor
from mfmaccel.progress import PlainProgress

MODELS = ("smollm2-135m", "medvlm")
BITS = (2, 3, 4, 6, 8)
GRID = DesignSpace(rows=(8, 16, 32, 64), cols=(8, 16, 32, 64), a_buffer_kib=(128,),
                   b_buffer_kib=(64, 256, 1024), out_buffer_kib=(64,),
                   bandwidth_gbs=(8.5, 25.6, 100), clock_mhz=(200, 800), vector_lanes=(16,))
DEFAULTS = {"calib_tokens": 512, "tokens": 1024, "calibration": 16, "images": 32, "checks": 3}
SHORT = {"calib_tokens": "calib", "tokens": "tokens", "calibration": "calimages",
         "images": "images", "checks": "checks"}


def summary(record) -> dict:
    """The record without its full front (kept: the front's size and its mixed share)."""
    out = record.to_dict()
    front = out.pop("front")
    out["front_size"] = len(front)
    out["front_mixed"] = sum(p["assignment"].startswith("mixed") for p in front)
    out["front_sample"] = front[:: max(1, len(front) // 24)]
    out["uniform_dominated"] = {u["assignment"]: f"{u['front_dominated']}/{len(u['front'])}"
                                for u in out["uniform"]}
    return out


def codesign_model(model: str, args) -> dict:
    """One sensitivity (block and module tiers), then a co-design at each tier from it."""
    progress = PlainProgress().task
    subject = subject_for_spec(model, seq_len=1, calib_tokens=args.calib_tokens,
                               tokens=args.tokens, calibration=args.calibration,
                               images=args.images)
    sensitivity = measure_sensitivity(subject.module, subject.calibration,
                                      bit_specs(args.weight_bits), modules_tier=True,
                                      progress=progress("sensitivity"))
    out = {"sensitivity_seconds": sensitivity.seconds}
    for tier in args.tiers:
        print(f"{model}: co-design at the {tier} tier", file=sys.stderr)
        out[tier] = summary(codesign(subject, GRID, bits=args.weight_bits, tier=tier,
                                     checks=args.checks, executor=Executor(workers=2),
                                     sensitivity=sensitivity, progress=progress))
    return out


def record_options(args, defaults: dict[str, int]) -> list[str]:
    """The record name's parts for the options not at their default (models, bits, tiers,
    then `defaults`' counts); benchmarks/codesign_context.py names its records the same way."""
    options = [f"{SHORT[k]}{getattr(args, k)}" for k, v in defaults.items()
               if getattr(args, k) != v]
    if tuple(args.tiers) != TIERS:
        options.insert(0, "-".join(args.tiers))
    if tuple(args.weight_bits) != BITS:
        options.insert(0, "bits" + "".join(map(str, args.weight_bits)))
    if tuple(args.models) != MODELS:
        options.insert(0, "-".join(args.models))
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--weight-bits", nargs="+", type=int, default=list(BITS))
    parser.add_argument("--tiers", nargs="+", default=list(TIERS), choices=TIERS)
    for name, value in DEFAULTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=value)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    report = {"grid": {k: v for k, v in vars(GRID).items() if k != "weight_bits"},
              "settings": {**{k: getattr(args, k) for k in DEFAULTS},
                           "weight_bits": args.weight_bits, "seq_len": 1},
              "models": {model: codesign_model(model, args) for model in args.models}}
    path = recordfile.record_path(["codesign", *record_options(args, DEFAULTS)],
                                  recordfile.commit()) \
        if args.record else None
    recordfile.emit(report, path)


if __name__ == "__main__":
    main()

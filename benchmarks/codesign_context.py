"""Does a mixed bit assignment beat uniform bits by measurement, not only by prediction?
(issue 24, item 5's target). Prints JSON.

`codesign.py`'s mixtures are chosen on an additive prediction from blocks measured alone, the
rest in full precision; its checks found 1 of 6 dominance pairs holding on held-out data. Here
the prediction is measured where the mixture lives (`compress.neighbours`): around each
uniform assignment that has a bit-width below and above it, every block (`--tiers block`) or
every linear (`module`) moves one step with the rest at the uniform bits; the fewest-bytes set
of moves predicted `--margin` below the uniform model is solved exactly and measured whole on
the calibration text; a miss tightens the allowance by itself and the set is solved again
(`--tries`). A mixture that measures below the uniform model on the calibration text is then
measured, with the uniform model, on held-out data: the pair "holds" when the mixture, with
fewer bytes, is still no worse there.

The same models and data as `codesign.py`: smollm2-135m (KL per token, `--calib-tokens` train
tokens, `--tokens` test tokens) and medvlm's DINOv2 tower (cosine distance of the last block,
`--calibration` train images, `--images` test images). Fewer bytes are fewer DRAM bytes on
every design of the co-design's grid (`hw.simulate` prices weights by their bytes), so a
mixture holding here dominates its uniform point on the same design.

Usage: python benchmarks/codesign_context.py [--models smollm2-135m medvlm]
       [--weight-bits 2 3 4 6 8] [--tiers block module] [--margin 0.02] [--tries 4]
       [--calib-tokens 512] [--tokens 1024] [--calibration 16] [--images 32] [--record]
`--record` also writes benchmarks/results/<date>-codesign-context[-options]-at-<commit>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import recordfile
from codesign import BITS, MODELS, record_options

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from mfmaccel.compress.neighbours import measure_neighbours
from mfmaccel.hw.codesign import bit_specs
from mfmaccel.hw.codesign_check import measured_quality
from mfmaccel.hw.codesign_ladder import TIERS
from mfmaccel.hw.codesign_run import subject_for_spec
from mfmaccel.runtime.plan import QuantPlan

DEFAULTS = {"calib_tokens": 512, "tokens": 1024, "calibration": 16, "images": 32}


def around(subject, specs, bits: int, tier: str, args) -> dict:
    """The in-context search around uniform `bits`, and its held-out check when it found one."""
    found = measure_neighbours(subject.module, subject.calibration, specs, bits, tier=tier,
                               margin=args.margin, tries=args.tries)
    out = found.to_dict()
    moves = out.pop("moves")
    out["units"] = len(moves)
    out["moved"] = None
    out["heldout"] = None
    if found.choice is not None:
        out.pop("choice")
        out["moved"] = {label: sum(lab == label for lab in found.choice.values())
                        for label in sorted(set(found.choice.values()))}
        fields = {s.label: {"bits": s.bits, "group_size": s.group_size,
                            "symmetric": s.symmetric} for s in specs}
        plans = [QuantPlan(dict.fromkeys(found.choice, found.center), fields, "rtn"),
                 QuantPlan(found.choice, fields, "rtn")]
        uniform, mixed = measured_quality(subject.module, subject.heldout, plans)
        out["heldout"] = {"uniform": uniform, "mixed": mixed, "holds": mixed <= uniform}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--weight-bits", nargs="+", type=int, default=list(BITS))
    parser.add_argument("--tiers", nargs="+", default=list(TIERS), choices=TIERS)
    parser.add_argument("--margin", type=float, default=0.02)
    parser.add_argument("--tries", type=int, default=4)
    for name, value in DEFAULTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=value)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    specs = bit_specs(args.weight_bits)
    centres = sorted(args.weight_bits)[1:-1]  # a bit-width below and above
    report = {"settings": {**{k: getattr(args, k) for k in DEFAULTS},
                           "weight_bits": args.weight_bits, "margin": args.margin,
                           "tries": args.tries}, "models": {}}
    for model in args.models:
        subject = subject_for_spec(model, seq_len=1, calib_tokens=args.calib_tokens,
                                   tokens=args.tokens, calibration=args.calibration,
                                   images=args.images)
        results = report["models"][model] = {}
        for tier in args.tiers:
            for bits in centres:
                started = time.perf_counter()
                print(f"{model}: around uniform {bits} bits, {tier} tier", file=sys.stderr)
                results[f"{tier}-{bits}"] = around(subject, specs, bits, tier, args)
                print(f"  {time.perf_counter() - started:.0f} s", file=sys.stderr)
    pairs = [r["heldout"] for m in report["models"].values() for r in m.values()]
    report["found"] = sum(p is not None for p in pairs)
    report["held"] = sum(p is not None and p["holds"] for p in pairs)
    report["searched"] = len(pairs)
    options = record_options(args, DEFAULTS)
    if args.margin != 0.02:
        options.insert(0, f"margin{args.margin:g}")
    path = recordfile.record_path(["codesign-context", *options], recordfile.commit()) \
        if args.record else None
    recordfile.emit(report, path)


if __name__ == "__main__":
    main()

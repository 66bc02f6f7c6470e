"""Real models through the accelerator top in RTL (`hw.rtl.top`): layers of a BERT encoder
(minilm-l6, `hw.intexec.bert`) or blocks of a Llama-family decoder (smollm2-135m,
`hw.intexec.llama`), their integer programs calibrated on the corpus's train half, compiled to
the top's instructions and simulated on one test-half sequence of `--tokens` tokens, each
layer's RTL outputs feeding the next layer's RTL run. Per layer: whether the outputs are
bit-exact with the integer program, the RTL's cycle counter against the count `top_cycles`
works out from the program, and against `hw.simulate`'s prediction for the same layer on the
top's arch (`top_model`: the traced float layer as its integer program runs it), with the
difference taken apart into what the model leaves out; the scratchpad and off-chip words the
program uses; the cycles by what they are spent on; the seconds the simulator took.

Usage: python benchmarks/rtl_top.py [--model minilm-l6] [--tokens 32] [--layers 0 1 ...]
       [--simulator verilator|icarus] [--record]
`--record` writes the JSON to
benchmarks/results/<date>-rtl-top-<model>-t<tokens>[-options]-at-<commit>.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from mfmaccel.hw.rtl.top_layers import run_layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--layers", type=int, nargs="+", default=None)
    parser.add_argument("--simulator", choices=("verilator", "icarus"),
                        default="verilator" if shutil.which("verilator") else "icarus")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_layers(args.model, Path(tmp), tokens=args.tokens, layers=args.layers,
                            simulator=args.simulator,
                            progress=lambda done, total: print(f"layer {done}/{total}",
                                                               file=sys.stderr))
    for layer in result.layers:
        print(f"layer {layer.index}: bit-exact {layer.bit_exact}, rtl {layer.rtl_cycles}, "
              f"counted {layer.counted_cycles}, model {layer.model_cycles} "
              f"({layer.model_vs_rtl:+.2%}), {layer.simulation_seconds} s", file=sys.stderr)
    report = {"command": "python benchmarks/rtl_top.py " + " ".join(sys.argv[1:]),
              "commit": recordfile.commit(), **result.to_dict(),
              "seconds": round(time.perf_counter() - started, 1)}
    parts = ["rtl-top", args.model, f"t{args.tokens}"]
    if args.layers is not None:
        parts.append("layers" + "-".join(map(str, sorted(set(args.layers)))))
    if args.simulator != "verilator":
        parts.append(args.simulator)
    recordfile.emit(report, recordfile.record_path(parts, report["commit"])
                    if args.record else None)
    sys.exit(0 if result.all_bit_exact and result.all_counted_exactly else 1)


if __name__ == "__main__":
    main()

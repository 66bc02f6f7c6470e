"""The code cascade small -> large on HumanEval, from each model's own evaluation run.

Inputs are `mfmaccel eval --task humaneval --out FILE` records (they keep every completion and
whether it passed the hidden tests), one per model, smallest first. Each completion is
self-tested against its prompt's examples in the sandbox (plus, with --test-lines L, L assert
lines the model writes per problem, their cost counted); theta is calibrated on even-numbered
problems (cheapest theta whose pass@1 there is no lower than the largest model's alone) and
the cascade is reported on the odd-numbered ones: pass@1, compute cost (FLOPs, 2 x the weights
a token is multiplied through x prompt+completion tokens, against always using the largest
model) and who answered. The whole
cost curve over theta is printed for both halves. Prints JSON.

Usage: python benchmarks/cascade.py --models qwen2.5-coder-0.5b qwen2.5-coder-1.5b
       --evals results/humaneval-0.5b.json results/humaneval-1.5b.json [--test-lines 5]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from mfmaccel.decode.cascade_run import code_cascade


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--evals", nargs="+", type=Path, required=True)
    parser.add_argument("--test-lines", type=int, default=0)
    args = parser.parse_args()
    if len(args.models) != len(args.evals):
        raise SystemExit("give one --evals record per model, in the same order")
    report = code_cascade(args.models, evals=args.evals, test_lines=args.test_lines)
    print(json.dumps(report.to_dict(), indent=1))


if __name__ == "__main__":
    main()

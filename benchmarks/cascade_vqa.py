"""The VQA cascade small -> large on the medical VQA benchmark: each question is answered by
ranking its candidates; the small model's answer stands when its margin (top answer's
probability minus the runner-up's) reaches theta, calibrated on the val split to keep the large
model's accuracy and reported on the whole test split, with FLOPs and wall-time cost. Prints
JSON. Usage: python benchmarks/cascade_vqa.py --small SPEC --large medvlm [--limit N]

SPEC is any model spec, e.g. a pruned medvlm with its downstream phase retrained (what
benchmarks/configs/medvlm-small-vqa.yaml's header says how to build; then --small small/).
A quantized medvlm does the same FLOPs as the full one, so only a model that computes less can
make the cascade cheaper by this count. Records before 2026-12 calibrated on the even-numbered
test questions and reported on the odd ones (`calibrated_on` says which).
"""

from __future__ import annotations

import argparse
import json
import os

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from mfmaccel.decode.cascade_run import vqa_cascade


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", required=True)
    parser.add_argument("--large", default="medvlm")
    parser.add_argument("--limit", type=int, default=None, help="questions per split")
    args = parser.parse_args()
    report = vqa_cascade([args.small, args.large], limit=args.limit)
    print(json.dumps(report.to_dict(), indent=1))


if __name__ == "__main__":
    main()

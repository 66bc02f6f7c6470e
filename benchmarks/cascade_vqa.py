"""The VQA cascade small -> large on a medical VQA benchmark (medvqa2 for medvlm, medvqa for
medvlm-v1): each question is answered by
ranking its candidates; the small model's answer stands when its margin (top answer's
probability minus the runner-up's) reaches theta, calibrated on the val split to keep the large
model's accuracy and reported on the whole test split, with FLOPs and wall-time cost. Prints
JSON. Usage: python benchmarks/cascade_vqa.py --small SPEC [--large medvlm] [--task medvqa2]
[--limit N] [--record]

SPEC is any model spec, e.g. a pruned medvlm with its downstream phase retrained (what
benchmarks/configs/medvlm-small-vqa.yaml's header says how to build; then --small small/;
medvlm-v1-small-vqa.yaml for medvlm-v1 on medvqa). --record also writes the report to
benchmarks/results/<date>-cascade-vqa-<task>-at-<commit>.json.
A quantized medvlm does the same FLOPs as the full one, so only a model that computes less can
make the cascade cheaper by this count. Records before 2026-12 calibrated on the even-numbered
test questions and reported on the odd ones (`calibrated_on` says which).
"""

from __future__ import annotations

import argparse
import os

from recordfile import commit, emit, record_path

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from mfmaccel.decode.cascade_run import vqa_cascade
from mfmaccel.decode.choices import CascadeTask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", required=True)
    parser.add_argument("--large", default="medvlm")
    parser.add_argument("--task", default=CascadeTask.medvqa2,
                        choices=[CascadeTask.medvqa2, CascadeTask.medvqa])
    parser.add_argument("--limit", type=int, default=None, help="questions per split")
    parser.add_argument("--record", action="store_true", help="also write the report")
    args = parser.parse_args()
    report = vqa_cascade([args.small, args.large], limit=args.limit, benchmark=args.task)
    report.questions = args.task
    path = record_path(["cascade-vqa", args.task], commit()) if args.record else None
    emit(report.to_dict(), path)


if __name__ == "__main__":
    main()

"""medvlm with 4-bit weights against full precision on the medical VQA test split, both
measured in this run (same questions, likelihood ranking). Prints JSON.

`--model medvlm` (the default: DINOv2 tower, medvqa2's test split) or `--model medvlm-v1`
(the from-scratch tower, medvqa's); `--task` picks the test split otherwise.

The language model's linears and head are quantized (GPTQ, or round-to-nearest); the vision
tower and projector stay in full precision. GPTQ calibrates on what the language model reads
in VQA (`--calibration vqa`: train images, questions and answers, embedded) or on text from the
corpus's train half (`--calibration text`).
Usage: python benchmarks/medvlm_quant.py [--model medvlm] [--task medvqa2] [--limit N]
       [--spec int4-g128] [--method gptq] [--calibration vqa]
"""

from __future__ import annotations

import argparse
import json
import os

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from mfmaccel.compress.calibration import calibration_batches, gptq_calibration_batches
from mfmaccel.compress.quantize import quantize_model, storage_bytes, uniform_plan
from mfmaccel.compress.search import parse_spec
from mfmaccel.data.medvqa import (
    load_benchmark,
    majority_baseline,
    planned_answers,
    planned_answers_v2,
)
from mfmaccel.evaluate.vqa import vqa_accuracy
from mfmaccel.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="medvlm")
    parser.add_argument("--task", choices=("medvqa", "medvqa2"), default=None,
                        help="test split (default: the benchmark the model was adapted on)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--spec", default="int4-g128")
    parser.add_argument("--method", default="gptq")
    parser.add_argument("--calib-tokens", type=int, default=2048)
    parser.add_argument("--calibration", choices=("vqa", "text"), default="vqa")
    args = parser.parse_args()
    model = load_model(args.model)
    task = args.task or model.meta.get("benchmark", "medvqa")
    test = load_benchmark(task, "test", limit=args.limit)
    train = planned_answers_v2("train") if task == "medvqa2" else planned_answers("train")
    baseline = majority_baseline(train, test)
    full = vqa_accuracy(model, test, majority_baseline=baseline).to_dict()
    full_bytes = storage_bytes(model.module)
    batches = (gptq_calibration_batches(model, args.calib_tokens) if args.calibration == "vqa"
               else calibration_batches(model.tokenizer, args.calib_tokens))
    quantize_model(model, uniform_plan(model.module, parse_spec(args.spec), args.method), batches)
    quant = vqa_accuracy(model, test, majority_baseline=baseline).to_dict()
    print(json.dumps({
        "model": args.model, "task": task, "questions": len(test), "spec": args.spec,
        "method": args.method, "calibration": args.calibration,
        "full_precision": {"accuracy": full["accuracy"], "per_type": full["per_type"],
                           "bytes_fp16": full_bytes},
        "quantized": {"accuracy": quant["accuracy"], "per_type": quant["per_type"],
                      "bytes": storage_bytes(model.module)},
        "accuracy_change_points": 100 * (quant["accuracy"] - full["accuracy"]),
        "majority_baseline": baseline,
    }, indent=1))


if __name__ == "__main__":
    main()

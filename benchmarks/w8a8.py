"""W8A8 (int8 weights and int8 activations) against int8 weights alone and full precision, in
one run: perplexity on the test half of the text corpus (context 512) and batch-1 decode
tokens/s (our loop, median of repeats).

Variants, all from the same checkpoint: fp32 as loaded; W8 (int8 per-channel symmetric
weights, RTN; float activations); W8A8 with dynamic per-token activation scales; W8A8 with one
calibrated scale per layer (largest |x| on calibration text, and its 99.99th percentile, which
clips rare outliers); and both after SmoothQuant smoothing (alpha 0.5) moved activation outliers
into the weights. The per-tensor variants are what an integer-only accelerator runs. Prints
JSON.

Usage: python benchmarks/w8a8.py [--model smollm2-135m] [--eval-tokens 16384] [--variants ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import torch

from mfmaccel.compress.calibration import calibration_batches
from mfmaccel.compress.quantize import quantize_model, uniform_plan
from mfmaccel.data.text import load_text_corpus
from mfmaccel.evaluate.ppl import perplexity
from mfmaccel.evaluate.speed import measure_speed
from mfmaccel.models import load_model
from mfmaccel.runtime.grid import INT8_PER_CHANNEL
from mfmaccel.runtime.plan import QuantPlan

VARIANTS = {  # name -> (activations, percentile, SmoothQuant alpha)
    "w8": (None, 100.0, None),
    "w8a8-token": ("token", 100.0, None),
    "w8a8-tensor-absmax": ("tensor", 100.0, None),
    "w8a8-tensor-p99.99": ("tensor", 99.99, None),
    "w8a8-token-smooth0.5": ("token", 100.0, 0.5),
    "w8a8-tensor-smooth0.5": ("tensor", 100.0, 0.5),
}


def measure(model, text: str, args) -> dict:
    start = time.perf_counter()
    ppl = perplexity(model, text, max_tokens=args.eval_tokens).perplexity
    speed = measure_speed(model, new_tokens=args.new_tokens, repeats=args.repeats)
    return {"ppl": ppl, "ppl_seconds": time.perf_counter() - start,
            "decode_tokens_per_s": speed.decode_tokens_per_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--calib-tokens", type=int, default=2048)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    text = load_text_corpus("test")
    model = load_model(args.model)
    rows = {"fp32": measure(model, text, args)}
    batches = calibration_batches(model.tokenizer, args.calib_tokens)
    for name in args.variants:
        activations, percentile, smoothing = VARIANTS[name]
        model = load_model(args.model)
        plan = uniform_plan(model.module, INT8_PER_CHANNEL)
        plan = QuantPlan(plan.choice, plan.specs, "rtn", activations, percentile, smoothing)
        quantize_model(model, plan, batches)
        rows[name] = measure(model, text, args)
        rows[name]["ppl_increase"] = rows[name]["ppl"] / rows["fp32"]["ppl"] - 1
        print(json.dumps({name: rows[name]}), flush=True)
    print(json.dumps({"model": args.model, "threads": torch.get_num_threads(),
                      "eval_tokens": args.eval_tokens, "calib_tokens": args.calib_tokens,
                      "results": rows}, indent=1))


if __name__ == "__main__":
    main()

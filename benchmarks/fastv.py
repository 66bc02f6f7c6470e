"""Image-token dropping in medvlm's language model (FastV, issue 23): accuracy, LM prefill FLOPs
and prefill latency against the plain model on the first N medvqa2 test questions. Prints JSON.

For each K (`layer`: the last of the layers that see every token, 0-based, so K+1 layers run in
full; FastV's paper counts the full layers, its K=2 is our layer=1) and keep ratio, the copy
from `execute.fastv.with_image_token_dropping` is scored like the plain model (candidate
ranking, `evaluate.vqa.vqa_accuracy`). LM prefill FLOPs are 2 x each block's multiplied weights
x the tokens that block processes (all of them up to K, the kept ones after), plus the head on
the one position read; attention's score/value products and the vision tower (unchanged by
the knob) are left out. Prefill latency is the whole prompt forward (tower + LM, KV cache
filled, last logits), timed on the first `--latency-questions` prompts, alternating the plain
model and the setting (which goes first flips every time), `--repeats` rounds; medians.

medvlm reads 112 px images as 8 x 8 = 64 image tokens, so its prompts are short and the image
is only part of them (`image_share`); FastV's -45% FLOPs is for LLaVA-1.5's 576 image tokens.

Usage: python benchmarks/fastv.py [--limit 200] [--layers 2 3] [--keeps 0.75 0.5 0.25]
       [--latency-questions 20] [--repeats 5] [--record]
`--record` also writes benchmarks/results/<date>-fastv[-limitN]-at-<commit>.json.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import torch
from transformers import DynamicCache

from mfmaccel.evaluate.run import vqa_samples
from mfmaccel.evaluate.vqa import prompt_inputs, vqa_accuracy
from mfmaccel.execute.fastv import with_image_token_dropping
from mfmaccel.models import load_model
from mfmaccel.runtime.anatomy import decoder_layers, linear_layers, weight_matrix

MODEL = "medvlm"
ANCHOR = ("FastV (ECCV 2024): dropping 50% of the lowest-attention image tokens after LM layer 2 "
          "cuts LLaVA-1.5-13B's FLOPs by 45% at no accuracy loss (576 image tokens)")


def kept_images(n_image: int, keep: float) -> int:
    """ceil(keep x n_image), as `execute.fastv` keeps."""
    return math.ceil(round(keep * n_image, 9))


def block_weights(model) -> list[int]:
    """Multiplied weights of each decoder block."""
    return [sum(weight_matrix(linear).numel() for linear in linear_layers(block).values())
            for block in decoder_layers(model.module)]


def prefill_flops(weights: list[int], head: int, *, tokens: int, image: int, layer: int | None,
                  keep: float = 1.0) -> float:
    """2 x weights x tokens per block, the blocks after `layer` on the kept tokens only."""
    kept = tokens - image + kept_images(image, keep)
    per_block = [tokens if layer is None or i <= layer else kept for i in range(len(weights))]
    return 2.0 * (sum(w * t for w, t in zip(weights, per_block, strict=True)) + head)


def mean_flops(model, inputs: list[dict], *, layer: int | None, keep: float = 1.0) -> float:
    weights = block_weights(model)
    config = model.module.config
    head = config.text_config.hidden_size * config.text_config.vocab_size
    image_id = config.image_token_id
    totals = [prefill_flops(weights, head, tokens=x["input_ids"].shape[1],
                            image=int((x["input_ids"] == image_id).sum()), layer=layer, keep=keep)
              for x in inputs]
    return statistics.fmean(totals)


@torch.inference_mode()
def prefill_seconds(model, inputs: dict) -> float:
    start = time.perf_counter()
    model.module(**inputs, cache=DynamicCache(), use_cache=True, logits_to_keep=1)
    return time.perf_counter() - start


def paired_latency(plain, setting, inputs: list[dict], repeats: int) -> tuple[float, float]:
    """Median prefill seconds of the plain model and the setting, timed in alternation."""
    for model in (plain, setting):  # warm-up
        prefill_seconds(model, inputs[0])
    times: dict[int, list[float]] = {0: [], 1: []}
    for round_ in range(repeats):
        for index, prompt in enumerate(inputs):
            order = (0, 1) if (round_ + index) % 2 == 0 else (1, 0)
            for which in order:
                times[which].append(prefill_seconds((plain, setting)[which], prompt))
    return statistics.median(times[0]), statistics.median(times[1])


def measure(args: argparse.Namespace) -> dict:
    plain = load_model(MODEL)
    samples = vqa_samples(None, "test", limit=args.limit, benchmark="medvqa2")
    inputs = [prompt_inputs(plain, s) for s in samples]
    image_id = plain.module.config.image_token_id
    lengths = [x["input_ids"].shape[1] for x in inputs]
    n_image = int((inputs[0]["input_ids"] == image_id).sum())
    timed = inputs[: args.latency_questions]
    base = vqa_accuracy(plain, samples)
    base_flops = mean_flops(plain, inputs, layer=None)
    rows = []
    for layer in args.layers:
        for keep in args.keeps:
            setting = with_image_token_dropping(plain, layer=layer, keep=keep)
            result = vqa_accuracy(setting, samples)
            flops = mean_flops(plain, inputs, layer=layer, keep=keep)
            base_s, setting_s = paired_latency(plain, setting, timed, args.repeats)
            rows.append({
                "layer": layer, "full_layers": layer + 1, "keep": keep,
                "kept_image_tokens": kept_images(n_image, keep), "accuracy": result.accuracy,
                "accuracy_delta": result.accuracy - base.accuracy, "per_type": result.per_type,
                "lm_prefill_gflops": flops / 1e9, "flops_ratio": flops / base_flops,
                "prefill_ms": setting_s * 1e3, "baseline_prefill_ms": base_s * 1e3,
                "speedup": base_s / setting_s,
            })
    return {
        "benchmark": "fastv", "model": MODEL, "questions": "medvqa2 test", "n": len(samples),
        "commit": recordfile.commit(), "threads": torch.get_num_threads(),
        "lm_blocks": len(decoder_layers(plain.module)), "image_tokens": n_image,
        "prompt_tokens_mean": statistics.fmean(lengths),
        "image_share": statistics.fmean(n_image / n for n in lengths),
        "ranking": "attention received at layer K from the queries after the image, "
                   "mean over heads and queries",
        "latency": {"questions": len(timed), "repeats": args.repeats,
                    "what": "whole prompt forward (tower + LM), medians, alternating"},
        "baseline": {"accuracy": base.accuracy, "per_type": base.per_type,
                     "lm_prefill_gflops": base_flops / 1e9},
        "settings": rows, "anchor": ANCHOR,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=200, help="medvqa2 test questions")
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--keeps", type=float, nargs="+", default=[0.75, 0.5, 0.25])
    parser.add_argument("--latency-questions", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="also write the report")
    args = parser.parse_args()
    report = measure(args)
    parts = ["fastv"] + ([f"limit{args.limit}"] if args.limit != 200 else [])
    path = recordfile.record_path(parts, report["commit"]) if args.record else None
    recordfile.emit(report, path)


if __name__ == "__main__":
    main()

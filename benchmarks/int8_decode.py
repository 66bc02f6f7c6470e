"""Batch-1 decode with int8 weights (our C++ kernel) against fp32, on this machine, in one run.

Two models from the same checkpoint: fp32 as loaded, and every linear and the head quantized
to int8 (per-channel symmetric), whose single-token matmuls run through
`csrc/int8_linear.cpp`; the same int8 model with the kernel switched off (dequantized weights,
fp32 matmuls) is the reference its greedy tokens must equal. Reports
tokens/s (median of repeats, our decode loop), the speed-up over fp32, whether the greedy tokens
equal the dequantized reference's, and the fraction of the bandwidth roofline reached (bytes the
weights occupy / measured streaming-read bandwidth). Also a prefill of `--prefill-tokens`
tokens (one forward, median of repeats) for fp32, int8 (weight rows dequantized block by block,
`quant.linear.PREFILL_BLOCK_BYTES`) and the int8 reference (the whole weight dequantized per
call, as every int8 prefill did before session 11). Prints JSON.

Usage: python benchmarks/int8_decode.py [--model smollm2-135m] [--new-tokens 64] [--repeats 5]
       [--prefill-tokens 256]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import torch
from decode import read_bandwidth  # benchmarks/decode.py: the same measurement

from mfmaccel.compress.quantize import quantize_model, uniform_plan
from mfmaccel.evaluate.speed import DEFAULT_PROMPT, measure_speed
from mfmaccel.models import load_model
from mfmaccel.runtime.engine import greedy_generate
from mfmaccel.runtime.grid import INT8_PER_CHANNEL
from mfmaccel.runtime.kernels import KERNELS, int8_kernel


def tokens(model, new_tokens: int) -> list[int]:
    ids = model.tokenizer(DEFAULT_PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode():
        return list(greedy_generate(model.module, ids, new_tokens).tokens)


def prefill_seconds(model, tokens: int, repeats: int) -> float:
    """Median time of one forward over `tokens` random ids (logits of the last one only)."""
    ids = torch.randint(0, model.module.config.get_text_config().vocab_size, (1, tokens),
                        generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first call warms allocations, not timed
            start = time.perf_counter()
            model.module(input_ids=ids, logits_to_keep=1)
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def decode_bytes(model) -> int:
    """Bytes one decode step reads: every matmul weight (the embedding lookup reads one row)."""
    total = 0
    for module in model.module.modules():
        if getattr(module, "is_packed", False):
            total += module.nbytes
        elif isinstance(module, torch.nn.Linear):
            total += module.weight.numel() * module.weight.element_size()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prefill-tokens", type=int, default=256)
    args = parser.parse_args()
    if int8_kernel() is None:
        raise SystemExit("the int8 kernel did not build here (see the warning); nothing to time")
    bandwidth = read_bandwidth()
    fp32 = load_model(args.model)
    fp32_speed = measure_speed(fp32, new_tokens=args.new_tokens, repeats=args.repeats)
    fp32_bytes = decode_bytes(fp32)
    int8 = quantize_model(load_model(args.model), uniform_plan(fp32.module, INT8_PER_CHANNEL))
    KERNELS.enabled = False  # the dequantized reference: same integers, fp32 matmuls
    reference_tokens = tokens(int8, args.new_tokens)
    KERNELS.enabled = True
    int8_speed = measure_speed(int8, new_tokens=args.new_tokens, repeats=args.repeats)
    int8_bytes = decode_bytes(int8)
    prefill = {"tokens": args.prefill_tokens}
    for name, model, fast in (("fp32", fp32, True), ("int8", int8, True),
                              ("int8_whole_weight", int8, False), ("fp32_again", fp32, True)):
        KERNELS.enabled = fast
        prefill[f"{name}_seconds"] = prefill_seconds(model, args.prefill_tokens, args.repeats)
    KERNELS.enabled = True
    result = {
        "model": args.model, "threads": torch.get_num_threads(), "new_tokens": args.new_tokens,
        "read_bandwidth_gb_s": bandwidth / 1e9,
        "fp32": {"tokens_per_s": fp32_speed.decode_tokens_per_s, "weight_bytes": fp32_bytes,
                 "roofline_tokens_per_s": bandwidth / fp32_bytes},
        "int8": {"tokens_per_s": int8_speed.decode_tokens_per_s, "weight_bytes": int8_bytes,
                 "roofline_tokens_per_s": bandwidth / int8_bytes},
        "speedup": int8_speed.decode_tokens_per_s / fp32_speed.decode_tokens_per_s,
        "greedy_tokens_identical_to_dequantized_reference":
            tokens(int8, args.new_tokens) == reference_tokens,
        "prefill": prefill,
    }
    for key in ("fp32", "int8"):
        result[key]["roofline_fraction"] = (result[key]["tokens_per_s"]
                                            / result[key]["roofline_tokens_per_s"])
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

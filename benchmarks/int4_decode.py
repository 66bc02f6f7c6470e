"""Batch-1 decode with 4-bit weights (csrc/int4_linear.cpp) against int8 (csrc/int8_linear.cpp),
on this machine, in one run.

The same checkpoint quantized uniformly (every linear and the head) to int8 per channel and to
each 4-bit spec asked for. Each model decodes greedily from the first `--prompts` HumanEval
prompts; the timed runs alternate the models' order repeat by repeat (int8 first, then last)
and report the median tokens/s of each and the ratio to int8. Each quantized model's greedy
tokens on those prompts are compared with its dequantized reference (the same integers, fp32
matmuls: `KERNELS.enabled = False`). Prints JSON; `--record` also writes it under
benchmarks/results/.

Usage: python benchmarks/int4_decode.py [--model qwen2.5-coder-0.5b]
       [--specs int4-g32-sym int4-g128-asym] [--prompts 4] [--new-tokens 64] [--repeats 3]
       [--record]
"""

from __future__ import annotations

import argparse
import os
import statistics

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import recordfile
import torch

from mfmaccel.compress.quantize import quantize_model, uniform_plan
from mfmaccel.compress.search import parse_spec
from mfmaccel.data.code import load_humaneval
from mfmaccel.models import load_model
from mfmaccel.runtime.engine import greedy_generate
from mfmaccel.runtime.grid import INT8_PER_CHANNEL
from mfmaccel.runtime.kernels import KERNELS, int4_kernel, int8_kernel
from mfmaccel.runtime.linear import QuantLinear


def prompt_ids(model, count: int) -> list[torch.Tensor]:
    return [model.tokenizer(problem.prompt, return_tensors="pt").input_ids
            for problem in load_humaneval()[:count]]


def greedy_tokens(model, prompts: list[torch.Tensor], new_tokens: int) -> list[list[int]]:
    with torch.inference_mode():
        return [list(greedy_generate(model.module, ids, new_tokens).tokens) for ids in prompts]


def reference_tokens(model, prompts: list[torch.Tensor], new_tokens: int) -> list[list[int]]:
    """The dequantized reference's tokens; the fp32 weights it builds are dropped after."""
    tokens = KERNELS.reference(lambda: greedy_tokens(model, prompts, new_tokens))
    for layer in model.module.modules():
        if isinstance(layer, QuantLinear):
            layer._weight = None
    return tokens


def decode_rate(model, prompts: list[torch.Tensor], new_tokens: int) -> float:
    """Decode tokens/s over every prompt (prefill excluded), as one figure."""
    steps = seconds = 0.0
    with torch.inference_mode():
        for ids in prompts:
            out = greedy_generate(model.module, ids, new_tokens)
            steps += len(out.tokens) - 1
            seconds += out.decode_seconds
    return steps / seconds


def kernel_layers(model) -> dict[str, int]:
    """How many layers take each kernel (a spec the kernel cannot serve would dequantize)."""
    layers = [m for m in model.module.modules() if isinstance(m, QuantLinear)]
    return {"int8": sum(m.uses_int8_kernel for m in layers),
            "int4": sum(m.uses_int4_kernel for m in layers), "all": len(layers)}


def weight_bytes(model) -> int:
    return sum(m.nbytes for m in model.module.modules() if isinstance(m, QuantLinear))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--specs", nargs="+", default=["int4-g32-sym", "int4-g128-asym"])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    if int8_kernel() is None or int4_kernel() is None:
        raise SystemExit("the int8 or the AVX-512 int4 kernel is not available here (see the "
                         "warning); nothing to compare")
    specs = {"int8": INT8_PER_CHANNEL} | {label: parse_spec(label) for label in args.specs}
    models, result = {}, {"model": args.model, "threads": torch.get_num_threads(),
                          "prompts": args.prompts, "new_tokens": args.new_tokens,
                          "repeats": args.repeats, "variants": {}}
    prompts = None
    for name, spec in specs.items():
        base = load_model(args.model)
        prompts = prompts or prompt_ids(base, args.prompts)
        models[name] = quantize_model(base, uniform_plan(base.module, spec))
        reference = reference_tokens(models[name], prompts, args.new_tokens)
        result["variants"][name] = {
            "spec": spec.label, "weight_bytes": weight_bytes(models[name]),
            "kernel_layers": kernel_layers(models[name]),
            "greedy_tokens_identical_to_dequantized_reference":
                greedy_tokens(models[name], prompts, args.new_tokens) == reference,
            "tokens_per_s_runs": []}
    for model in models.values():  # untimed warm-up
        decode_rate(model, prompts[:1], 8)
    order = list(models)
    for repeat in range(args.repeats):
        for name in order if repeat % 2 == 0 else order[::-1]:
            rate = decode_rate(models[name], prompts, args.new_tokens)
            result["variants"][name]["tokens_per_s_runs"].append(rate)
    for variant in result["variants"].values():
        variant["tokens_per_s"] = statistics.median(variant["tokens_per_s_runs"])
    int8_rate = result["variants"]["int8"]["tokens_per_s"]
    for variant in result["variants"].values():
        variant["speedup_over_int8"] = variant["tokens_per_s"] / int8_rate
    result["commit"] = recordfile.commit()
    path = (recordfile.record_path(["int4-decode", args.model], result["commit"])
            if args.record else None)
    recordfile.emit(result, path)


if __name__ == "__main__":
    main()

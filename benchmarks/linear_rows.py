"""Few-row linear layers: MKL's `x @ W^T` against `FewRowsLinear`'s forms, in one run.

Decode feeds every linear one row; batched decode and speculative verification 2-32 rows.
Part one times the stock product and ours (`mfmaccel.runtime.fewrows.few_rows_linear`: one
slab per thread for one row, the weight-stationary `(W @ x^T)^T` for 2-32) on each distinct
layer shape of a real model (and its vocabulary head) for 1-64 rows, the weight warm in cache.
Part two runs one row through every linear layer of the model in model order, so the weights
stream from memory as in a decode step, and reports GB/s of weight read each way. Part three
times greedy decode steps on HumanEval prompts (batch 1 and batched) with the stock
`nn.Linear` and with our `FewRowsLinear`, and says whether the greedy tokens agree.
Medians of repeats; prints JSON.

Usage: python benchmarks/linear_rows.py [--model qwen2.5-coder-0.5b] [--batches 1 4 16]
       [--new-tokens 32] [--repeats 3] [--record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import torch
from torch import nn
from torch.nn import functional

from mfmaccel.data.code import load_humaneval
from mfmaccel.evaluate.codegen import code_prompt_ids
from mfmaccel.models import load_model
from mfmaccel.runtime.engine import generate_batch
from mfmaccel.runtime.fewrows import FewRowsLinear, few_rows_linear

ROWS = (1, 2, 4, 8, 16, 32, 64)
PROMPT_TOKENS = 48  # the end of each chat prompt: keeps the prefill short


def median_seconds(run, repeats: int) -> tuple[float, object]:
    """Median wall time of `run()` after one warm-up, and what its last call returned."""
    output = run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        output = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), output


def layer_shapes(module: nn.Module) -> list[tuple[int, int]]:
    return sorted({tuple(m.weight.shape) for m in module.modules() if isinstance(m, nn.Linear)})


def time_shapes(module: nn.Module, repeats: int) -> list[dict]:
    rows_out = []
    for out_features, in_features in layer_shapes(module):
        weight = torch.randn(out_features, in_features)
        for rows in ROWS:
            x = torch.randn(rows, in_features)
            stock, _ = median_seconds(partial(functional.linear, x, weight), repeats)
            ours, _ = median_seconds(partial(few_rows_linear, x, weight), repeats)
            rows_out.append({"shape": [out_features, in_features], "rows": rows,
                             "stock_ms": stock * 1e3, "few_rows_ms": ours * 1e3,
                             "speedup": stock / ours})
    return rows_out


def time_model_order(module: nn.Module, repeats: int) -> dict:
    """One row through every linear layer in model order: the weights come from memory."""
    weights = [m.weight.detach() for m in module.modules() if isinstance(m, nn.Linear)]
    rows = {width: torch.randn(1, width) for width in {w.shape[1] for w in weights}}
    weight_bytes = sum(w.numel() * w.element_size() for w in weights)
    result = {"layers": len(weights), "weight_bytes": weight_bytes}
    for name, product in (("stock", functional.linear), ("few_rows", few_rows_linear)):
        seconds, _ = median_seconds(lambda p=product: [p(rows[w.shape[1]], w) for w in weights],
                                    repeats)
        result[f"{name}_ms"] = seconds * 1e3
        result[f"{name}_gb_per_s"] = weight_bytes / seconds / 1e9
    result["speedup"] = result["stock_ms"] / result["few_rows_ms"]
    return result


def set_linear_class(module: nn.Module, cls: type) -> None:
    for child in module.modules():
        if type(child) in (nn.Linear, FewRowsLinear):
            child.__class__ = cls


def time_batched_decode(model, batch: int, new_tokens: int, repeats: int) -> dict:
    """Decode tokens/s of `batch` rows: (time for new_tokens - time for 1) / (new_tokens - 1).

    The prefill (PROMPT_TOKENS per row, a long input, the stock path in both cases) is
    subtracted out, so the figure is the decode steps alone."""
    problems = load_humaneval()[:batch]
    prompts = [code_prompt_ids(model, p)[0].tolist()[-PROMPT_TOKENS:] for p in problems]
    pad = model.tokenizer.pad_token_id or 0
    result = {"batch": batch, "new_tokens": new_tokens, "prompt_tokens": PROMPT_TOKENS}
    tokens = {}
    for name, cls in (("stock", nn.Linear), ("few_rows", FewRowsLinear)):
        set_linear_class(model.module, cls)
        # no EOS stop: every row decodes new_tokens, so both runs do the same work
        decode = partial(generate_batch, model.module, prompts, eos_token_ids=set(),
                         pad_token_id=pad)
        prefill, _ = median_seconds(partial(decode, max_new_tokens=1), repeats)
        total, tokens[name] = median_seconds(partial(decode, max_new_tokens=new_tokens),
                                             repeats)
        result[f"{name}_tokens_per_s"] = batch * (new_tokens - 1) / (total - prefill)
    result["speedup"] = result["few_rows_tokens_per_s"] / result["stock_tokens_per_s"]
    result["greedy_tokens_identical"] = tokens["stock"] == tokens["few_rows"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    model = load_model(args.model)
    result = {"model": args.model, "threads": torch.get_num_threads(),
              "layers": time_shapes(model.module, max(9, args.repeats)),
              "one_row_model_order": time_model_order(model.module, max(5, args.repeats)),
              "batched_decode": [time_batched_decode(model, b, args.new_tokens, args.repeats)
                                 for b in args.batches]}
    result["load_average_at_end"] = os.getloadavg()
    result["commit"] = recordfile.commit()
    path = (recordfile.record_path(["linear-rows", args.model], result["commit"])
            if args.record else None)
    recordfile.emit(result, path)


if __name__ == "__main__":
    main()

"""The foundation figures for each built-in model, measured in one run on this machine:
load time (cached, and cold: GGUF dequantization into an empty cache), perplexity on the
offline corpus, decode speed of our loop and of HF `generate`, and sandboxed HumanEval pass@1
(greedy) on a fixed subset. Prints one JSON object per model, then a summary list.

Usage: python benchmarks/zoo.py --models smollm2-135m gemma3-270m --humaneval 40 [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from mfmaccel.data.code import humaneval_subset, load_humaneval
from mfmaccel.data.text import load_text_corpus
from mfmaccel.evaluate.codegen import code_completions
from mfmaccel.evaluate.humaneval import evaluate_humaneval
from mfmaccel.evaluate.ppl import perplexity
from mfmaccel.evaluate.speed import measure_speed
from mfmaccel.models import load_model


def timed_load(name: str, cache: str | None = None):
    import os

    previous = os.environ.get("MFMACCEL_CACHE")
    if cache:
        os.environ["MFMACCEL_CACHE"] = cache
    try:
        start = time.perf_counter()
        model = load_model(name)
        return model, time.perf_counter() - start
    finally:
        if cache:
            if previous is None:
                del os.environ["MFMACCEL_CACHE"]
            else:
                os.environ["MFMACCEL_CACHE"] = previous


def measure(name: str, args: argparse.Namespace) -> dict:
    row: dict = {"model": name}
    if args.cold:
        with tempfile.TemporaryDirectory() as empty:
            _, row["cold_load_seconds"] = timed_load(name, empty)
    model, row["cached_load_seconds"] = timed_load(name)
    row.update(params=model.params, weight_bytes=model.weight_bytes)
    if args.ppl_tokens:
        ppl = perplexity(model, load_text_corpus("test"), context=512,
                         max_tokens=args.ppl_tokens, corpus="pydoc-topics:test")
        row["perplexity"] = ppl.to_dict()
    ours = measure_speed(model, new_tokens=args.new_tokens, repeats=3)
    hf = measure_speed(model, new_tokens=args.new_tokens, repeats=3, engine="hf-generate")
    row["speed"] = {"ours": ours.to_dict(), "hf_generate": hf.to_dict(),
                    "ours_over_hf": ours.decode_tokens_per_s / hf.decode_tokens_per_s}
    if args.humaneval:
        problems = humaneval_subset(load_humaneval(), args.humaneval, seed=0)
        completions = code_completions(model, problems, max_new_tokens=384).texts
        result = evaluate_humaneval(problems, lambda p: completions[p.task_id], ks=(1,))
        row["humaneval"] = {"subset": args.humaneval, "seed": 0, **result.to_dict()}
        row["humaneval"].pop("per_problem")
        row["humaneval"]["solved"] = [r["task_id"] for r in result.per_problem if r["n_correct"]]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m"])
    parser.add_argument("--humaneval", type=int, default=40, help="subset size (164 = all)")
    parser.add_argument("--ppl-tokens", type=int, default=8192, help="0 skips perplexity")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--cold", action="store_true", help="also time a load into an empty cache")
    args = parser.parse_args()
    rows = []
    for name in args.models:
        rows.append(measure(name, args))
        print(json.dumps(rows[-1], indent=2), flush=True)
    print(json.dumps([{"model": r["model"], "ppl": r.get("perplexity", {}).get("perplexity"),
                       "tok_s": r["speed"]["ours"]["decode_tokens_per_s"],
                       "ours_over_hf": r["speed"]["ours_over_hf"],
                       "pass@1": r.get("humaneval", {}).get("pass_at_k")} for r in rows]))


if __name__ == "__main__":
    main()

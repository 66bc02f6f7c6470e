"""How much of the code a target writes a narrowed draft head can propose.

For each head size K, `code_vocabulary` picks K ids (special tokens, then the most frequent in
the standard library's Python source, then id order); the coverage is the share of the tokens
of HumanEval's canonical solutions among them, alone and with each problem's prompt tokens
added (as `NarrowedHead` adds its context's). A token outside the head can only come from the
target, so it ends the draft's run: coverage bounds the acceptance a narrowed draft keeps.
Prints JSON.

Usage: python benchmarks/draft_vocab.py [--model qwen2.5-coder-0.5b] [--sizes 16384 32768 49152]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from mfmaccel.data.code import load_humaneval
from mfmaccel.decode.drafts import code_vocabulary
from mfmaccel.models import load_model


def coverage(solutions: list[list[int]], prompts: list[set[int]], kept: set[int]) -> float:
    """Share of the solutions' tokens in `kept` plus their own prompt's tokens."""
    hits = sum(token in kept or token in prompt
               for solution, prompt in zip(solutions, prompts, strict=True) for token in solution)
    return hits / sum(map(len, solutions))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16384, 32768, 49152])
    args = parser.parse_args()
    model = load_model(args.model)
    vocab = model.module.get_output_embeddings().out_features
    problems = load_humaneval()
    solutions = [model.tokenizer(p.canonical_solution, add_special_tokens=False).input_ids
                 for p in problems]
    prompts = [set(model.tokenizer(p.prompt).input_ids) for p in problems]
    rows = []
    for size in args.sizes:
        start = time.perf_counter()
        kept = set(code_vocabulary(model.tokenizer, size, vocab_size=vocab).tolist())
        seconds = time.perf_counter() - start
        rows.append({"size": size, "share_of_head": size / vocab, "build_seconds": seconds,
                     "coverage": coverage(solutions, [set()] * len(problems), kept),
                     "coverage_with_prompt": coverage(solutions, prompts, kept)})
    print(json.dumps({"model": args.model, "vocab": vocab, "sizes": rows}, indent=1))


if __name__ == "__main__":
    main()

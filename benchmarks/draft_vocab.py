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
import time

from mfmaccel.data.code import load_humaneval
from mfmaccel.decode.drafts import code_vocabulary
from mfmaccel.models import load_model


def coverage(tokenizer, problems, kept: set[int], with_prompt: bool) -> float:
    hits = total = 0
    for problem in problems:
        allowed = kept | set(tokenizer(problem.prompt).input_ids) if with_prompt else kept
        solution = tokenizer(problem.canonical_solution, add_special_tokens=False).input_ids
        hits += sum(token in allowed for token in solution)
        total += len(solution)
    return hits / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16384, 32768, 49152])
    args = parser.parse_args()
    model = load_model(args.model)
    vocab = model.module.get_output_embeddings().out_features
    problems = load_humaneval()
    rows = []
    for size in args.sizes:
        start = time.perf_counter()
        kept = set(code_vocabulary(model.tokenizer, size, vocab).tolist())
        seconds = time.perf_counter() - start
        rows.append({"size": size, "share_of_head": size / vocab, "build_seconds": seconds,
                     "coverage": coverage(model.tokenizer, problems, kept, False),
                     "coverage_with_prompt": coverage(model.tokenizer, problems, kept, True)})
    print(json.dumps({"model": args.model, "vocab": vocab, "sizes": rows}, indent=1))


if __name__ == "__main__":
    main()

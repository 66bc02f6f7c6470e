"""The whole stack against what a user would otherwise run: tokens/s end to end on one model,
layer by layer, beside llama.cpp on the packaged GGUF, in one run.

Every variant generates exactly `--new-tokens` tokens (end of turn ignored) greedily after each
of the first `--prompts` HumanEval prompts, chat-formatted as the code evaluation sends them,
with the same threads. Tokens/s end to end = new tokens / wall seconds from the prompt going in
to the last token out, summed over the prompts. The timed set runs `--repeats` times, in order
on even repeats and reversed on odd ones; each variant's figure is the median over repeats.

Variants, each adding one layer to the one before:
- `hf-generate-fp32`: Hugging Face `generate` on the fp32 model (its linears as we load them).
- `fp32`: our greedy loop on the same model.
- `quantized`: the model quantized by `--quant` (a spec such as int8-c-sym or int4-g128-asym,
  round to nearest, every linear and the head), through our kernels.
- `fused`: the quantized model with q/k/v and gate/up stacked (`execute.fusion`).
- `speculative`: the fused model verifying `--draft` (lookup, layers:N, a model name, or
  NAME@QUANT for that model quantized to a uniform spec first, as `decode.drafts` reads it).
- `llama.cpp`: `llama-cpp-python` on the packaged GGUF of the same model (for the zoo's
  qwen2.5-coder models the Q4_K_M file our fp32 weights were dequantized from), greedy (top-k 1),
  and `llama.cpp-lookup` with its prompt-lookup draft (`LlamaPromptLookupDecoding`). The
  binding is an optional extra with a long build (`make llama-cpp`); without it these two
  variants are left out, and the record says so in one line.

For each variant the record keeps whether its tokens equal those of the variant it should
reproduce (`hf-generate-fp32` = `fp32`; `fused` and `speculative` = `quantized`), and for the
others the share of positions where they agree with `fp32`. A CPU result: on a GPU the balance
of bandwidth and compute, and so every ratio, differs.

Usage: python benchmarks/headline.py [--model qwen2.5-coder-1.5b] [--quant int8-c-sym]
       [--draft qwen2.5-coder-0.5b@int8-c-sym] [--prompts 4]
       [--new-tokens 64] [--repeats 2] [--variants ...] [--record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import recordfile
import torch

from mfmaccel.compress.quantize import quantize_model, uniform_plan
from mfmaccel.compress.search import parse_spec
from mfmaccel.data.code import load_humaneval
from mfmaccel.decode.drafts import draft_from_spec
from mfmaccel.decode.gamma import START_GAMMA, GammaSchedule
from mfmaccel.decode.speculative import speculative_generate
from mfmaccel.evaluate.codegen import code_prompt_ids
from mfmaccel.execute.fusion import fuse
from mfmaccel.models import load_model
from mfmaccel.models.packaged import join_gguf
from mfmaccel.models.zoo import BUILTIN_MODELS
from mfmaccel.runtime.engine import greedy_generate

OURS = ("hf-generate-fp32", "fp32", "quantized", "fused", "speculative")
LLAMA = ("llama.cpp", "llama.cpp-lookup")
REPRODUCES = {"hf-generate-fp32": "fp32", "fused": "quantized", "speculative": "quantized"}


def our_variants(args, fp32) -> dict:
    """name -> generate(prompt ids) -> new tokens, for every variant of ours asked for."""
    n = args.new_tokens
    runs = {
        "hf-generate-fp32": lambda ids: hf_generate(fp32, ids, n),
        "fp32": lambda ids: greedy(fp32.module, ids, n),
    }
    if not {"quantized", "fused", "speculative"} & set(args.variants):
        return runs
    base = load_model(args.model)
    quantized = quantize_model(base, uniform_plan(base.module, parse_spec(args.quant)))
    runs["quantized"] = lambda ids: greedy(quantized.module, ids, n)
    if not {"fused", "speculative"} & set(args.variants):
        return runs
    fused = fuse(quantized)
    runs["fused"] = lambda ids: greedy(fused.module, ids, n)
    if "speculative" in args.variants:
        draft, schedule = draft_from_spec(args.draft, fused.module), GammaSchedule(START_GAMMA)
        runs["speculative"] = lambda ids: speculative_generate(
            fused.module, draft, ids, max_new_tokens=n, gamma=schedule).tokens[:n]
    return runs


def greedy(module, ids: list[int], n: int) -> list[int]:
    return greedy_generate(module, torch.tensor([ids]), n).tokens


def hf_generate(model, ids: list[int], n: int) -> list[int]:
    prompt = torch.tensor([ids])
    out = model.module.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                pad_token_id=model.tokenizer.pad_token_id or 0)
    return out[0, prompt.shape[1]:].tolist()


def llama_variants(args, workdir: Path) -> tuple[dict, str | None]:
    """The llama.cpp variants, or none and the one line saying why."""
    try:
        import llama_cpp
    except ImportError:
        return {}, ("llama-cpp-python is not installed (an optional extra with a long build: "
                    "`make llama-cpp`); the llama.cpp variants are left out")
    builtin = BUILTIN_MODELS.get(args.model)
    if builtin is None or builtin.weights.fmt != "gguf":
        return {}, f"{args.model} ships no GGUF file; the llama.cpp variants are left out"
    path = join_gguf(builtin, workdir / f"{args.model}.gguf")
    drafts = {"llama.cpp": None,
              "llama.cpp-lookup": llama_cpp.llama_speculative.LlamaPromptLookupDecoding}
    runs = {}
    for name in (name for name in LLAMA if name in args.variants):  # each loads the file
        llm = llama_cpp.Llama(str(path), n_ctx=2048, n_threads=torch.get_num_threads(),
                              n_batch=512, verbose=False,
                              draft_model=drafts[name]() if drafts[name] else None)
        runs[name] = lambda ids, llm=llm: llama_generate(llm, ids, args.new_tokens)
    return runs, None


def llama_generate(llm, ids: list[int], n: int) -> list[int]:
    """Exactly `n` greedy tokens from a fresh context (no prefix kept from an earlier call)."""
    llm.reset()
    tokens = []
    for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, reset=True):
        tokens.append(token)
        if len(tokens) == n:
            break
    return tokens


def timed(run, prompts: list[list[int]]) -> tuple[float, list[list[int]]]:
    """(end-to-end tokens/s over every prompt, the tokens of each)."""
    outputs, start = [], time.perf_counter()
    with torch.inference_mode():
        for ids in prompts:
            outputs.append(list(run(ids)))
    return sum(map(len, outputs)) / (time.perf_counter() - start), outputs


def agreement(ours: list[list[int]], theirs: list[list[int]]) -> float:
    """Share of positions where two sets of outputs hold the same token."""
    same = sum(a == b for x, y in zip(ours, theirs, strict=True)
               for a, b in zip(x, y, strict=False))
    return same / max(1, sum(len(x) for x in ours))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--quant", default="int8-c-sym")
    parser.add_argument("--draft", default="qwen2.5-coder-0.5b@int8-c-sym")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=[*OURS, *LLAMA],
                        choices=[*OURS, *LLAMA])
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    fp32 = load_model(args.model)
    prompts = [code_prompt_ids(fp32, problem)[0].tolist()
               for problem in load_humaneval()[:args.prompts]]
    with tempfile.TemporaryDirectory(prefix="mfmaccel-headline-") as workdir:
        runs = {name: run for name, run in our_variants(args, fp32).items()
                if name in args.variants}
        llama_runs, llama_note = llama_variants(args, Path(workdir))
        report = measure(runs | llama_runs, prompts, args.repeats)
    report = {"model": args.model, "quant": args.quant,
              "draft": args.draft,
              "threads": torch.get_num_threads(), "prompts": args.prompts,
              "new_tokens": args.new_tokens, "repeats": args.repeats,
              "llama_cpp": llama_note or "llama-cpp-python "
              + __import__("llama_cpp").__version__, **report}
    report["commit"] = recordfile.commit()
    path = (recordfile.record_path(["headline", args.model, args.quant], report["commit"])
            if args.record else None)
    recordfile.emit(report, path)


def measure(runs: dict, prompts: list[list[int]], repeats: int) -> dict:
    """Warm each variant up, time the set `repeats` times in alternating order, and compare
    the outputs."""
    for run in runs.values():
        timed(run, prompts[:1])
    rates: dict[str, list[float]] = {name: [] for name in runs}
    outputs: dict[str, list[list[int]]] = {}
    order = list(runs)
    for repeat in range(repeats):
        for name in order if repeat % 2 == 0 else order[::-1]:
            rate, outputs[name] = timed(runs[name], prompts)
            rates[name].append(rate)
    baseline = statistics.median(rates[order[0]])
    variants = {}
    for name in order:
        median = statistics.median(rates[name])
        row = {"tokens_per_s": median, "tokens_per_s_runs": rates[name],
               f"speedup_over_{order[0]}": median / baseline}
        if name in REPRODUCES and REPRODUCES[name] in outputs:
            row[f"identical_to_{REPRODUCES[name]}"] = outputs[name] == outputs[REPRODUCES[name]]
        elif name != "fp32" and "fp32" in outputs:
            row["agreement_with_fp32"] = agreement(outputs["fp32"], outputs[name])
        variants[name] = row
    return {"baseline": order[0], "variants": variants}


if __name__ == "__main__":
    main()

"""Greedy speculative decoding against our own autoregressive loop and HF assisted generation,
on HumanEval prompts (chat-formatted, as the code evaluation sends them), in one run.

For each draft: tokens/s over all prompts (total new tokens / total time), the speed-up over
our greedy loop on the same prompts, acceptance rate, tokens committed per target forward, and
whether every prompt's output equals the target's own greedy output. A "-narrow" suffix
(`model-narrow`, `model-int8-narrow`, `early-exit-narrow`) gives a model draft a head over
`--draft-vocab` tokens only (FR-Spec; `decode.drafts.code_vocabulary`) plus the context's; a
"lookup+" prefix (`lookup+model-int8`, `lookup+model-narrow`) tries prompt lookup first and runs
the model draft only where the context has no match. With `--draft-model` the same as
`--target`, `model-int8` is self-speculation: the target's own int8 copy, which starts from the
target's keys and values over the prompt (`--draft self:int8`, `decode.drafts.int8_copy`); HF's
assistant runs the prompt itself.
HF `generate` with `assistant_model` is timed the same way with the same draft models
(`hf-assisted`: the fp32 draft; `hf-assisted-int8`: the int8 one). Each of our drafts runs
under every rule in `--gamma-rules` (`decode.gamma`: cost-aware, HF's heuristic, fixed),
starting from `--gamma` (default 20, HF's `num_assistant_tokens`); one schedule per draft and
rule carries across the warm-up, the prompts and the repeats, as HF's assistant keeps its
gamma from call to call.
With `--repeats N` the whole set (our loop and every draft) runs N times, in the given order on
even repeats and in reverse on odd ones, so the machine's fast and slow spells favour no run
(in 2026-11-30-speculative-alternating-order.json one draft's time moved by 15% between
repeats); times are the median over repeats and each repeat's own speed-up is kept.
Prints JSON. A CPU result: on a GPU the cost ratio of draft to target, and so the speed-up,
differ.

Usage: python benchmarks/speculative.py [--target qwen2.5-coder-1.5b]
       [--draft-model qwen2.5-coder-0.5b] [--prompts 4] [--new-tokens 96]
       [--gamma 20] [--gamma-rules cost heuristic] [--repeats 1] [--draft-vocab 32768]
       [--drafts lookup early-exit model model-int8 lookup+model-int8 hf-assisted
                 hf-assisted-int8 model-int8-narrow]
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

from mfmaccel.compress.quantize import quantize_model, uniform_plan
from mfmaccel.data.code import humaneval_subset, load_humaneval
from mfmaccel.decode.drafts import (
    LookupThenModelDraft,
    ModelDraft,
    PromptLookupDraft,
    code_vocabulary,
    draft_from_spec,
    int8_copy,
)
from mfmaccel.decode.gamma import RULES, START_GAMMA, GammaSchedule
from mfmaccel.decode.speculative import speculative_generate
from mfmaccel.evaluate.codegen import code_prompt_ids
from mfmaccel.models import load_model
from mfmaccel.runtime.engine import eos_ids, greedy_generate
from mfmaccel.runtime.grid import INT8_PER_CHANNEL

HF_ASSISTED = {"hf-assisted": "model", "hf-assisted-int8": "model-int8"}  # -> the draft it runs
WARM_UP_TOKENS = 16
BASELINE = ("our autoregressive loop", None)


def baseline(target, prompts, new_tokens, stop) -> tuple[list[list[int]], float]:
    outputs, seconds = [], 0.0
    for ids in prompts:
        start = time.perf_counter()
        out = greedy_generate(target.module, torch.tensor([ids]), new_tokens, eos_token_ids=stop)
        seconds += time.perf_counter() - start
        outputs.append(out.tokens)
    return outputs, seconds


def hf_assisted(target, draft_module, prompts, new_tokens, stop) -> tuple[list[list[int]], float]:
    outputs, seconds = [], 0.0
    for ids in prompts:
        inputs = torch.tensor([ids])
        start = time.perf_counter()
        with torch.inference_mode():
            out = target.module.generate(inputs, attention_mask=torch.ones_like(inputs),
                                         assistant_model=draft_module, do_sample=False,
                                         max_new_tokens=new_tokens, eos_token_id=sorted(stop))
        seconds += time.perf_counter() - start
        outputs.append(out[0, len(ids):].tolist())
    return outputs, seconds


def speculative(target, draft, prompts, new_tokens, stop, schedule: GammaSchedule) -> dict:
    outputs, seconds, proposed, accepted, rounds = [], 0.0, 0, 0, 0
    start = len(schedule.history)  # the schedule carries earlier runs' rounds too
    for ids in prompts:
        out = speculative_generate(target.module, draft, ids, max_new_tokens=new_tokens,
                                   gamma=schedule, eos_token_ids=stop)
        outputs.append(out.tokens)
        seconds += out.seconds
        proposed += out.stats.proposed
        accepted += out.stats.accepted
        rounds += out.stats.rounds
    return {"outputs": outputs, "seconds": seconds, "gamma_rule": schedule.rule,
            "mean_gamma": statistics.fmean(schedule.history[start:] or [0]),
            "acceptance_rate": accepted / max(proposed, 1),
            "tokens_per_target_forward": sum(map(len, outputs)) / max(rounds, 1)}


def make_draft(kind: str, target, args, cache: dict):
    """A draft by name; a "-narrow" suffix narrows a model draft's head to --draft-vocab
    tokens (`code_vocabulary`, built once); a "lookup+" prefix tries prompt lookup first."""
    vocab = target.module.get_output_embeddings().out_features
    if kind.startswith("lookup+"):
        model = make_draft(kind.removeprefix("lookup+"), target, args, cache)
        return LookupThenModelDraft(PromptLookupDraft(vocab), model)
    vocab_ids = None
    if kind.endswith("-narrow"):
        kind = kind.removesuffix("-narrow")
        if "vocab" not in cache:
            cache["vocab"] = code_vocabulary(target.tokenizer, args.draft_vocab, vocab_size=vocab)
        vocab_ids = cache["vocab"]
    if kind in ("lookup", "early-exit"):
        spec = "lookup" if kind == "lookup" else f"layers:{args.early_exit_layers}"
        return draft_from_spec(spec, target.module, vocab_ids)
    if kind not in ("model", "model-int8"):
        raise SystemExit(f"unknown draft {kind!r}: use lookup, early-exit, model, model-int8, "
                         "hf-assisted or hf-assisted-int8, with -narrow or lookup+ where wanted")
    if kind == "model":
        if "model" not in cache:
            cache["model"] = load_model(args.draft_model)
        return ModelDraft(cache["model"].module, args.draft_model, vocab_ids=vocab_ids)
    own = args.draft_model == args.target  # self-speculation, as `--draft self:int8` runs it
    if "int8" not in cache:  # one int8 module for the plain and the narrowed draft
        if own:
            cache["int8"] = int8_copy(target.module)
        else:
            fresh = load_model(args.draft_model)
            quantize_model(fresh, uniform_plan(fresh.module, INT8_PER_CHANNEL))
            cache["int8"] = fresh.module
    return ModelDraft(cache["int8"], f"{args.draft_model} int8", vocab_ids=vocab_ids,
                      shares_target_cache=own)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="qwen2.5-coder-1.5b")
    parser.add_argument("--draft-model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--gamma", type=int, default=START_GAMMA,
                        help="starting gamma; HF assisted starts at 20")
    parser.add_argument("--early-exit-layers", type=int, default=8)
    parser.add_argument("--draft-vocab", type=int, default=32768,
                        help="head size of the -narrow drafts")
    parser.add_argument("--gamma-rules", nargs="+", default=["heuristic"], choices=RULES)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--drafts", nargs="+", default=[
        "lookup", "early-exit", "model", "model-int8", "lookup+model-int8", "hf-assisted",
        "hf-assisted-int8"])
    args = parser.parse_args()
    target = load_model(args.target)
    problems = humaneval_subset(load_humaneval(), args.prompts, seed=0)
    prompts = [code_prompt_ids(target, p)[0].tolist() for p in problems]
    stop = eos_ids(target.module, target.tokenizer)
    cache: dict = {}
    runs = list(dict.fromkeys((kind, None) if kind in HF_ASSISTED else (kind, rule)
                              for kind in args.drafts for rule in args.gamma_rules))
    for kind, rule in runs:
        # an untimed short run first, so one-time costs of a draft's first calls do not land on
        # whichever rule runs first (in 2026-11-30-speculative-gamma-rules.json the int8
        # draft's first rule took 163 s, its second 93 s)
        timed_run(kind, rule, target, args, cache, prompts[:1], WARM_UP_TOKENS, stop)
    reference, base_times, rows = None, [], {run: [] for run in runs}
    for repeat in range(args.repeats):
        order = [BASELINE, *runs]
        timed = {}
        for run in order if repeat % 2 == 0 else order[::-1]:
            if run is BASELINE:
                outputs, timed[run] = baseline(target, prompts, args.new_tokens, stop)
                reference = reference or outputs
                continue
            timed[run] = timed_run(*run, target, args, cache, prompts, args.new_tokens, stop)
        base_times.append(timed[BASELINE])
        for run in runs:
            row = timed[run]
            row["identical_on_every_prompt"] = row["outputs"] == reference
            row["identical_prompts"] = sum(o == r for o, r in
                                           zip(row.pop("outputs"), reference, strict=True))
            row["speedup_over_ours"] = timed[BASELINE] / row["seconds"]
            rows[run].append(row)
            print(json.dumps({"repeat": repeat, "draft": label(run, args), **row}), flush=True)
    tokens = sum(map(len, reference))
    base_median = statistics.median(base_times)
    result = {"target": args.target, "draft_model": args.draft_model,
              "threads": torch.get_num_threads(),
              "prompts": [p.task_id for p in problems], "new_tokens": args.new_tokens,
              "gamma_start": args.gamma, "repeats": args.repeats,
              "order": "as given on even repeats, reversed on odd ones",
              "ours_autoregressive_seconds": base_times,
              "ours_autoregressive_tokens_per_s": tokens / base_median, "drafts": {}}
    for run, repeats in rows.items():
        seconds = statistics.median(r["seconds"] for r in repeats)
        result["drafts"][label(run, args)] = {
            **repeats[0], "seconds": seconds, "tokens_per_s": tokens / seconds,
            "speedup_over_ours": base_median / seconds,
            "speedup_each_repeat": [r["speedup_over_ours"] for r in repeats],
            "identical_on_every_prompt": all(r["identical_on_every_prompt"] for r in repeats)}
    print(json.dumps(result, indent=1))


def timed_run(kind, rule, target, args, cache, prompts, new_tokens, stop) -> dict:
    """One draft (ours under `rule`, or HF assisted when `rule` is None) over `prompts`."""
    if rule is None:
        draft = built_draft(HF_ASSISTED[kind], target, args, cache)
        outputs, seconds = hf_assisted(target, draft.lm.module, prompts, new_tokens, stop)
        return {"outputs": outputs, "seconds": seconds}
    draft = built_draft(kind, target, args, cache)
    schedule = cache.setdefault(("schedule", kind, rule), GammaSchedule(args.gamma, rule))
    return speculative(target, draft, prompts, new_tokens, stop, schedule)


def built_draft(kind: str, target, args, cache: dict):
    """`make_draft(kind)` once per run of the benchmark: a narrowed head copies its rows."""
    if ("draft", kind) not in cache:
        cache["draft", kind] = make_draft(kind, target, args, cache)
    return cache["draft", kind]


def label(run: tuple[str, str | None], args) -> str:
    kind, rule = run
    return kind if rule is None or len(args.gamma_rules) == 1 else f"{kind} ({rule})"


if __name__ == "__main__":
    main()

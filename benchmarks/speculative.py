"""Greedy speculative decoding against our own autoregressive loop and HF assisted generation,
on HumanEval prompts (chat-formatted, as the code evaluation sends them), in one run.

For each draft: tokens/s over all prompts (total new tokens / total time), the speed-up over
our greedy loop on the same prompts, acceptance rate, tokens committed per target forward, and
whether every prompt's output equals the target's own greedy output. HF `generate` with
`assistant_model` is timed the same way with the same draft models (`hf-assisted`: the fp32
draft; `hf-assisted-int8`: the int8 one). Each of our drafts runs under every rule in
`--gamma-rules` (`decode.gamma`: cost-aware, HF's heuristic, fixed); one schedule per draft and
rule carries across the prompts, as HF's assistant keeps its gamma. Prints
JSON. A CPU result: on a GPU the cost ratio of draft to target, and so the speed-up, differ.

Usage: python benchmarks/speculative.py [--target qwen2.5-coder-1.5b]
       [--draft-model qwen2.5-coder-0.5b] [--prompts 4] [--new-tokens 96]
       [--gamma-rules cost heuristic]
       [--drafts lookup early-exit model model-int8 lookup+model-int8 hf-assisted
                 hf-assisted-int8]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mfmaccel.compress.quant.grid import QuantSpec
from mfmaccel.compress.quantize import quantize_model, uniform_plan
from mfmaccel.data.code import humaneval_subset, load_humaneval
from mfmaccel.decode.drafts import (
    LookupThenModelDraft,
    ModelDraft,
    PromptLookupDraft,
    draft_from_spec,
)
from mfmaccel.decode.engine import eos_ids, greedy_generate
from mfmaccel.decode.gamma import RULES, GammaSchedule
from mfmaccel.decode.speculative import speculative_generate
from mfmaccel.evaluate.codegen import code_prompt_ids
from mfmaccel.models import load_model

INT8 = QuantSpec(8, None, True)
HF_ASSISTED = {"hf-assisted": "model", "hf-assisted-int8": "model-int8"}  # -> the draft it runs
WARM_UP_TOKENS = 16


def baseline(target, prompts, new_tokens, stop) -> tuple[list[list[int]], float]:
    outputs, seconds = [], 0.0
    for ids in prompts:
        start = time.perf_counter()
        out = greedy_generate(target.module, torch.tensor([ids]), new_tokens, stop)
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
    for ids in prompts:
        out = speculative_generate(target.module, draft, ids, new_tokens, schedule,
                                   eos_token_ids=stop)
        outputs.append(out.tokens)
        seconds += out.seconds
        proposed += out.stats.proposed
        accepted += out.stats.accepted
        rounds += out.stats.rounds
    return {"outputs": outputs, "seconds": seconds, "gamma_rule": schedule.rule,
            "mean_gamma": sum(schedule.history) / max(len(schedule.history), 1),
            "acceptance_rate": accepted / max(proposed, 1),
            "tokens_per_target_forward": sum(map(len, outputs)) / max(rounds, 1)}


def make_draft(kind: str, target, args, cache: dict):
    vocab = target.module.get_output_embeddings().out_features
    if kind in ("lookup", "early-exit"):
        spec = "lookup" if kind == "lookup" else f"layers:{args.early_exit_layers}"
        return draft_from_spec(spec, target.module)
    if "model" not in cache:
        cache["model"] = load_model(args.draft_model)
    if kind == "model":
        return ModelDraft(cache["model"].module, args.draft_model)
    if "int8" not in cache:
        cache["int8"] = quantize_model(load_model(args.draft_model),
                                       uniform_plan(cache["model"].module, INT8))
    model = ModelDraft(cache["int8"].module, f"{args.draft_model} int8")
    if kind == "model-int8":
        return model
    return LookupThenModelDraft(PromptLookupDraft(vocab), model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="qwen2.5-coder-1.5b")
    parser.add_argument("--draft-model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--gamma", type=int, default=4)
    parser.add_argument("--early-exit-layers", type=int, default=8)
    parser.add_argument("--gamma-rules", nargs="+", default=["heuristic"], choices=RULES)
    parser.add_argument("--drafts", nargs="+", default=[
        "lookup", "early-exit", "model", "model-int8", "lookup+model-int8", "hf-assisted",
        "hf-assisted-int8"])
    args = parser.parse_args()
    target = load_model(args.target)
    problems = humaneval_subset(load_humaneval(), args.prompts, seed=0)
    prompts = [code_prompt_ids(target, p)[0].tolist() for p in problems]
    stop = eos_ids(target.module, target.tokenizer)
    reference, base_seconds = baseline(target, prompts, args.new_tokens, stop)
    base_rate = sum(map(len, reference)) / base_seconds
    result = {"target": args.target, "threads": torch.get_num_threads(),
              "prompts": [p.task_id for p in problems], "new_tokens": args.new_tokens,
              "gamma_start": args.gamma, "ours_autoregressive_tokens_per_s": base_rate,
              "drafts": {}}
    cache: dict = {}
    runs = [(kind, None) if kind in HF_ASSISTED else (kind, rule)
            for kind in args.drafts for rule in args.gamma_rules]
    for kind, rule in dict.fromkeys(runs):
        # an untimed short run first, so one-time costs of a draft's first calls do not land on
        # whichever rule runs first (in 2026-11-30-speculative-gamma-rules.json the int8
        # draft's first rule took 163 s, its second 93 s)
        if rule is None:
            draft = make_draft(HF_ASSISTED[kind], target, args, cache)
            hf_assisted(target, draft.lm.module, prompts[:1], WARM_UP_TOKENS, stop)
            outputs, seconds = hf_assisted(target, draft.lm.module, prompts, args.new_tokens,
                                           stop)
            row = {"outputs": outputs, "seconds": seconds}
        else:
            draft = make_draft(kind, target, args, cache)
            speculative(target, draft, prompts[:1], WARM_UP_TOKENS, stop,
                        GammaSchedule(args.gamma, rule))
            row = speculative(target, draft, prompts, args.new_tokens, stop,
                              GammaSchedule(args.gamma, rule))
            kind = kind if len(args.gamma_rules) == 1 else f"{kind} ({rule})"
        outputs = row.pop("outputs")
        row["tokens_per_s"] = sum(map(len, outputs)) / row["seconds"]
        row["speedup_over_ours"] = row["tokens_per_s"] / base_rate
        row["identical_on_every_prompt"] = outputs == reference
        row["identical_prompts"] = sum(o == r for o, r in zip(outputs, reference, strict=True))
        result["drafts"][kind] = row
        print(json.dumps({kind: row}), flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

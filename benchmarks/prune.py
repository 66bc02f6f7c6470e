"""Structural pruning of a causal LM against the unpruned model, both measured in this run:
decoder parameters, perplexity (test half of the text corpus, context 512), batch-1 prefill
latency and decode tokens/s (our loop, median of repeats); then, with --recover-steps, the
same after LoRA distillation from the unpruned model (recovery). Prints JSON.

Usage: python benchmarks/prune.py [--model smollm2-135m] [--blocks 4] [--mlp-fraction 0.2]
       [--kv-groups 0] [--eval-tokens 16384] [--recover-steps 60]
"""

from __future__ import annotations

import argparse
import json
import os

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import torch

from mfmaccel.compress.calibration import calibration_batches
from mfmaccel.compress.prune import prune_model
from mfmaccel.compress.recover import RECOVER_WINDOW, recover
from mfmaccel.data.text import load_text_corpus
from mfmaccel.evaluate.ppl import perplexity
from mfmaccel.evaluate.speed import measure_speed
from mfmaccel.models import load_model
from mfmaccel.runtime.anatomy import decoder_layers


def decoder_params(model) -> int:
    return sum(p.numel() for p in decoder_layers(model.module).parameters())


def measure(model, text: str, args) -> dict:
    with torch.inference_mode():
        ppl = perplexity(model, text, max_tokens=args.eval_tokens).perplexity
    speed = measure_speed(model, new_tokens=args.new_tokens, repeats=args.repeats)
    return {"decoder_params": decoder_params(model), "params": model.params, "ppl": ppl,
            "prefill_seconds": speed.prefill_seconds,
            "decode_tokens_per_s": speed.decode_tokens_per_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--mlp-fraction", type=float, default=0.2)
    parser.add_argument("--kv-groups", type=int, default=0)
    parser.add_argument("--calib-tokens", type=int, default=2048)
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--recover-steps", type=int, default=0)
    parser.add_argument("--recover-tokens", type=int, default=32768)
    args = parser.parse_args()
    text = load_text_corpus("test")
    model = load_model(args.model)
    before = measure(model, text, args)
    batches = calibration_batches(model.tokenizer, args.calib_tokens)
    model, report = prune_model(model, batches, blocks=args.blocks,
                                mlp_fraction=args.mlp_fraction, kv_groups=args.kv_groups)
    after = measure(model, text, args)
    recovered = None
    if args.recover_steps:
        teacher = load_model(args.model).module
        recovery_text = calibration_batches(model.tokenizer, args.recover_tokens,
                                            window=RECOVER_WINDOW)
        recovery = recover(model, teacher, recovery_text, steps=args.recover_steps)
        recovered = measure(model, text, args) | {
            "steps": recovery.steps, "rank": recovery.rank, "tokens_per_step":
            recovery.tokens_per_step, "seconds": recovery.seconds,
            "first_loss": recovery.losses[0], "last_loss": recovery.losses[-1],
            "ppl_increase": 0.0}
        recovered["ppl_increase"] = recovered["ppl"] / before["ppl"] - 1
    print(json.dumps({
        "model": args.model, "threads": torch.get_num_threads(),
        "settings": {"blocks": args.blocks, "mlp_fraction": args.mlp_fraction,
                     "kv_groups": args.kv_groups},
        "removed_blocks": report.removed_blocks, "before": before, "after": after,
        "decoder_params_removed": 1 - after["decoder_params"] / before["decoder_params"],
        "decode_speedup": after["decode_tokens_per_s"] / before["decode_tokens_per_s"],
        "prefill_latency_change": after["prefill_seconds"] / before["prefill_seconds"] - 1,
        "ppl_increase": after["ppl"] / before["ppl"] - 1,
        "recovery": recovered or "not run (--recover-steps 0)",
    }, indent=1))


if __name__ == "__main__":
    main()

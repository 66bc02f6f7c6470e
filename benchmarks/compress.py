"""Mixed-precision quantization against uniform baselines, all measured in this one run.

For one causal LM (or a BERT encoder such as minilm-l6, whose weights are genuine fp32, scored
by the cosine similarity of its sentence embeddings to full precision on 128 test paragraphs,
and measured by cosine distance instead of KL): full-precision perplexity on the test half of
the text corpus; uniform
round-to-nearest (int8 per-channel, int4 g128, int3 g128) and GPTQ (int4, int3) baselines;
the three-tier sensitivity analysis on calibration text from the train half (timed); then the
tiered mixed-precision search at several byte budgets (fractions of the FP16 model, whole
model counted: packed integers, scales, zero points and every fp16 parameter), each chosen
point quantized with GPTQ and its perplexity measured for real. Prints JSON.

Usage: python benchmarks/compress.py [--model smollm2-135m] [--eval-tokens 16384]
       [--calib-tokens 2048] [--budgets 0.28,0.32,0.36,0.40] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import torch

from mfmaccel.compress.calibration import calibration_batches
from mfmaccel.compress.mixed import MixedSearch
from mfmaccel.compress.quantize import quantize_model, storage_bytes, uniform_plan
from mfmaccel.compress.search import bit_histogram
from mfmaccel.compress.sensitivity import measure_sensitivity
from mfmaccel.data.text import load_text_corpus
from mfmaccel.evaluate.ppl import perplexity
from mfmaccel.hw.intexec.quality import corpus_sentences, mean_pooled, sentence_batches
from mfmaccel.models import ENCODER, load_model
from mfmaccel.runtime.grid import QuantSpec
from mfmaccel.runtime.parts import quantizable_parts
from mfmaccel.runtime.plan import QuantPlan

BASELINES = [(QuantSpec(8, None), "rtn"), (QuantSpec(4, 128), "rtn"), (QuantSpec(3, 128), "rtn"),
             (QuantSpec(4, 128), "gptq"), (QuantSpec(3, 128), "gptq")]
SEARCH_SPECS = [QuantSpec(3, 128), QuantSpec(4, 128), QuantSpec(6, 128)]


def perplexity_score(args, text: str):
    """Quality of a causal LM: perplexity on the test text; its loss is the relative increase."""
    def score(model) -> dict:
        with torch.inference_mode():
            ppl = perplexity(model, text, context=512, max_tokens=args.eval_tokens).perplexity
        return {"ppl": ppl}
    return score, "ppl_increase", lambda row, ref: row["ppl"] / ref["ppl"] - 1


def embedding_score(reference_model, sentences: int = 128):
    """Quality of an encoder: cosine of its sentence embeddings to full precision's; its loss
    is one minus the mean cosine."""
    batches = sentence_batches(reference_model.tokenizer, corpus_sentences("test", sentences))

    @torch.inference_mode()
    def embeddings(model) -> torch.Tensor:
        return torch.cat([mean_pooled(model.module(**b).last_hidden_state.double(),
                                      b["attention_mask"]) for b in batches])

    reference = embeddings(reference_model)

    def score(model) -> dict:
        cosine = (embeddings(model) * reference).sum(-1)
        return {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min())}
    return score, "cosine_loss", lambda row, ref: 1 - row["mean_cosine"]


def measure(name: str, plan: QuantPlan | None, batches, score, full_bytes: int) -> dict:
    model = load_model(name)
    start = time.perf_counter()
    if plan is not None:
        quantize_model(model, plan, batches)
    seconds = time.perf_counter() - start
    size = storage_bytes(model.module)
    return {**score(model), "bytes": size, "fraction_of_fp16": size / full_bytes,
            "quantize_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--calib-tokens", type=int, default=2048)
    parser.add_argument("--budgets", default="0.28,0.32,0.36,0.40")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    base = load_model(args.model)
    full_bytes = 2 * base.params
    if base.kind == ENCODER:
        score, loss_key, loss = embedding_score(base)
    else:
        score, loss_key, loss = perplexity_score(args, load_text_corpus("test"))
    batches = calibration_batches(base.tokenizer, args.calib_tokens)
    report = {"model": args.model, "eval_tokens": args.eval_tokens,
              "calib_tokens": args.calib_tokens, "fp16_bytes": full_bytes,
              "threads": torch.get_num_threads()}
    report["full_precision"] = reference = measure(args.model, None, batches, score, full_bytes)
    report["uniform"] = {}
    for spec, method in BASELINES:
        row = measure(args.model, uniform_plan(base.module, spec, method), batches, score,
                      full_bytes)
        row[loss_key] = loss(row, reference)
        report["uniform"][f"{method}-{spec.label}"] = row
        print(json.dumps({f"{method}-{spec.label}": row}), flush=True)
    start = time.perf_counter()
    sensitivity = measure_sensitivity(base.module, batches, SEARCH_SPECS)
    report["sensitivity"] = {"seconds": time.perf_counter() - start,
                             "seconds_per_spec": (time.perf_counter() - start) / len(SEARCH_SPECS),
                             "specs": list(sensitivity.specs), "network": sensitivity.network,
                             "blocks": sensitivity.blocks}
    parts = {n: p for n, (p, _) in quantizable_parts(base.module).items()}
    search = MixedSearch(parts, sensitivity)
    other = full_bytes - search.full_bytes()  # norms (and position embeddings) stay fp16
    report["mixed"] = []
    for fraction in (float(x) for x in args.budgets.split(",")):
        point = search.by_module(fraction * full_bytes - other)
        plan = QuantPlan(point.choice, sensitivity.specs, "gptq")
        row = measure(args.model, plan, batches, score, full_bytes)
        row.update(budget_fraction=fraction, predicted_kl=point.predicted_kl,
                   **{loss_key: loss(row, reference)},
                   bits_histogram=bit_histogram(point.choice))
        row["beats_uniform_at_fewer_bytes"] = all(
            row[loss_key] < u[loss_key] for u in report["uniform"].values()
            if u["bytes"] <= row["bytes"])
        report["mixed"].append(row)
        print(json.dumps({"mixed": row}), flush=True)
    report["every_mixed_point_beats_uniform"] = all(
        r["beats_uniform_at_fewer_bytes"] for r in report["mixed"])
    text_out = json.dumps(report, indent=1)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text_out + "\n")
    print(text_out)


if __name__ == "__main__":
    main()

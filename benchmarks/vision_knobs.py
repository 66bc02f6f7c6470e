"""Vision-tower knobs on medvlm (issue 23): input resolution, patch stride (FlexiViT PI-resize)
and token merging (ToMe) against the unchanged model, on the first N medvqa2 test questions.
Prints JSON.

For each setting: VQA accuracy (candidate ranking, as `mfmaccel evaluate --task medvqa2`),
the image tokens the language model gets, a FLOPs estimate and the median prefill latency.
FLOPs: the tower's GEMMs counted from its shapes (patch embedding; per block the q/k/v/o
projections and the two attention products on the tokens entering the block, the MLP on the
tokens leaving it, so ToMe's merges count), the projector at 2 x its weights per image token,
and the language model at the project's 2 x multiply-weights per prompt token
(`LoadedModel.multiply_weights`). Latency: `prompt_inputs` plus one forward of the prompt (what
`answer_scores` pays before the candidates), on the first `--latency-questions` questions,
`--repeats` times, alternating with the baseline (the baseline runs first on even repeats,
second on odd ones); each setting reports its median and the baseline's median measured
alongside it, and their ratio.

Settings (medvlm reads 112 px in 14 px patches: 8x8 = 64 image tokens, 12 tower blocks):
resolution 84 / 140 / 168 / 224; (image size, patch) pairs that divide: (112, 28), (128, 16),
(224, 28), (224, 16); ToMe r = 2 / 4 at 112 px (r <= 4 there: 64 patches over 12 blocks) and
r = 8 / 16 at 224 px; r = 8 at 112 px is listed to show the refusal.

Usage: python benchmarks/vision_knobs.py [--limit 200] [--repeats 5] [--latency-questions 3]
       [--model medvlm] [--record]
`--record` also writes benchmarks/results/<date>-vision-knobs[-limitN]-at-<commit>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.run import vqa_samples
from mfmaccel.evaluate.vqa import prompt_inputs, vqa_accuracy
from mfmaccel.execute.resolution import with_resolution
from mfmaccel.execute.stride import with_patch_stride
from mfmaccel.execute.tome import with_token_merging
from mfmaccel.execute.tower import patch_embedding, tower_geometry, vision_tower
from mfmaccel.models import load_model
from mfmaccel.models.record import LoadedModel

LIMIT = 200
Knob = Callable[[LoadedModel], LoadedModel]


def settings() -> dict[str, Knob]:
    """{name: model -> model with that setting}."""
    table: dict[str, Knob] = {"baseline": lambda m: m}
    for side in (84, 140, 168, 224):
        table[f"px{side}"] = lambda m, side=side: with_resolution(m, image_size=side)
    for side, patch in ((112, 28), (128, 16), (224, 28), (224, 16)):
        table[f"px{side}-patch{patch}"] = (
            lambda m, side=side, patch=patch: with_patch_stride(m, patch=patch, image_size=side))
    for side, r in ((112, 2), (112, 4), (112, 8), (224, 8), (224, 16)):
        table[f"px{side}-tome{r}"] = lambda m, side=side, r=r: with_token_merging(
            m if side == 112 else with_resolution(m, image_size=side), r=r)
    return table


@torch.inference_mode()
def tower_flops(model: LoadedModel, pixels: torch.Tensor) -> int:
    """GEMM FLOPs of one image through the tower, from its shapes and token counts."""
    tower = vision_tower(model)
    states = tower(pixels, output_hidden_states=True).hidden_states
    counts = [s.shape[1] for s in states]
    config = tower.config
    width = config.hidden_size
    mlp = int(width * getattr(config, "mlp_ratio", 0)) or config.intermediate_size
    grid = tower_geometry(model).grid
    flops = 2 * patch_embedding(tower).weight.numel() * grid * grid
    for entering, leaving in zip(counts[:-1], counts[1:], strict=True):
        flops += 2 * entering * 4 * width * width + 2 * 2 * entering * entering * width
        flops += 2 * leaving * 2 * width * mlp
    return flops


def flops_estimate(model: LoadedModel, samples: list) -> dict:
    """Mean FLOPs per question: tower, projector, language model (prefill)."""
    module = model.module
    tower_weights = sum(p.numel() for p in module.model.vision_tower.parameters())
    projector = sum(p.numel() for p in module.model.multi_modal_projector.parameters())
    lm_weights = model.multiply_weights - tower_weights - projector
    inputs = [prompt_inputs(model, s) for s in samples]
    prompt = statistics.mean(i["input_ids"].shape[1] for i in inputs)
    images = int((inputs[0]["input_ids"] == module.config.image_token_id).sum())
    tower = tower_flops(model, inputs[0]["pixel_values"])
    return {"image_tokens": images, "prompt_tokens": round(prompt, 1),
            "tower_gflops": round(tower / 1e9, 3),
            "projector_gflops": round(2 * projector * images / 1e9, 3),
            "lm_gflops": round(2 * lm_weights * prompt / 1e9, 3),
            "total_gflops": round((tower + 2 * projector * images + 2 * lm_weights * prompt)
                                  / 1e9, 3)}


@torch.inference_mode()
def prefill_seconds(model: LoadedModel, sample) -> float:
    start = time.perf_counter()
    model.module(**prompt_inputs(model, sample), use_cache=False, logits_to_keep=1)
    return time.perf_counter() - start


def latency(model: LoadedModel, baseline: LoadedModel, samples: list, repeats: int) -> dict:
    """Median prefill ms of `model` and of `baseline` timed alternately with it."""
    mine, theirs = [], []
    for sample in samples:
        prefill_seconds(model, sample)  # warm-up
        for repeat in range(repeats):
            order = ((baseline, theirs), (model, mine))
            for who, into in order if repeat % 2 == 0 else order[::-1]:
                into.append(prefill_seconds(who, sample))
    ms, base_ms = statistics.median(mine) * 1e3, statistics.median(theirs) * 1e3
    return {"prefill_ms": round(ms, 2), "baseline_prefill_ms": round(base_ms, 2),
            "speedup": round(base_ms / ms, 3)}


def measure(name: str, knob: Knob, baseline: LoadedModel, samples: list,
            args: argparse.Namespace) -> dict:
    try:
        model = knob(baseline)
    except UserInputError as refusal:
        return {"refused": str(refusal)}
    knobs = model.meta.get("vision_knobs", {})
    result = vqa_accuracy(model, samples, mode="rank")
    row = {"image_size": knobs.get("image_size", tower_geometry(model).image_size),
           "patch": knobs.get("patch", tower_geometry(model).patch_size),
           "tome_r": knobs.get("tome_r", 0),
           "accuracy": round(result.accuracy, 4), "per_type": result.per_type,
           "eval_seconds": round(result.seconds, 1),
           **flops_estimate(model, samples[: args.latency_questions]),
           **latency(model, baseline, samples[: args.latency_questions], args.repeats)}
    print(f"{name}: acc {row['accuracy']:.3f}, {row['image_tokens']} image tokens, "
          f"{row['total_gflops']} GFLOPs, {row['prefill_ms']} ms "
          f"(x{row['speedup']})", file=sys.stderr)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=LIMIT, help="first N medvqa2 test questions")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latency-questions", type=int, default=3)
    parser.add_argument("--model", default="medvlm")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    baseline = load_model(args.model)
    samples = vqa_samples(None, "test", limit=args.limit, benchmark="medvqa2")
    report = {"command": "python benchmarks/vision_knobs.py " + " ".join(sys.argv[1:]),
              "commit": recordfile.commit(), "threads": torch.get_num_threads(),
              "model": baseline.source, "questions": len(samples),
              "load_average": list(os.getloadavg()), "settings": {}}
    for name, knob in settings().items():
        report["settings"][name] = measure(name, knob, baseline, samples, args)
    report["load_average_end"] = list(os.getloadavg())
    report["seconds"] = round(time.perf_counter() - started, 1)
    parts = ["vision-knobs"] + ([f"limit{args.limit}"] if args.limit != LIMIT else [])
    parts += [args.model] if args.model != "medvlm" else []
    recordfile.emit(report, recordfile.record_path(parts, report["commit"])
                    if args.record else None)


if __name__ == "__main__":
    main()

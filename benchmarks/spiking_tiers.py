"""Tiered weight quantization of medvlm's spiking DINOv2 tower (issue 25, item 2: QSViT/QSLM
style). Prints JSON.

The spiking tower, once settled, equals the static-scale integer program bit for bit, so each
assignment of weight bits is measured on that program (`convert_dinov2(..., per_token=False,
weight_bits=...)`), and on two test images the settled spiking tower is checked to equal it.
The assignments: uniform 8, 4 and 3 bits (`--uniform`), and mixed ones from
`spiking.tiers.TowerTiers` (sensitivity of the tower's 72 linears at `--weight-bits`, per-channel
symmetric round-to-nearest, on the first `--sensitivity-images` of the `--calibration` train
images the program is calibrated on; `MixedSearch` at the block and the module tier) at two
byte budgets: the bytes of uniform `--equal-to` bits (3), and the most that still cuts the
tower's weights `--cut` (80%) below fp16 when that differs, there also with the search kept
off `--without` bits (2: their damage is what no other part's extra bits make up for). The
patch embedding stays at 8 bits and is counted.

For each: the tower's weight bytes (packed integers and fp16 per-channel scales) and their cut
against fp16; the last hidden states' cosine to the float tower, per token, on the first
`--images` test images (held out) and on `--select-images` train images past the calibration
ones (which pick the best mixed assignment at equal bytes without looking at the test split);
whether the settled spiking tower equals the program on two test images; and VQA accuracy on
medvqa2's test split beside the float VLM (`hw.intexec.quality.vision_agreement`), on a
type-balanced subset of `--questions` for every assignment (0: none) and on all 1,040
questions for those `--full` names (and float; `best`: the best mixed at equal bytes by the
cosine on the selection images; none: no full set). `--note` is kept in the record (e.g. why
a run scores the assignments it does).

Usage: python benchmarks/spiking_tiers.py [--weight-bits 2 3 4 6 8] [--uniform 8 4 3] [--equal-to 3]
       [--cut 0.8] [--without 2] [--calibration 64] [--sensitivity-images 64] [--images 64]
       [--select-images 32] [--questions 208] [--full uniform-3 best] [--note TEXT]
       [--record]
`--record` also writes benchmarks/results/<date>-spiking-tiers[-options]-at-<commit>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import torch

from mfmaccel.evaluate.vqa import vqa_accuracy
from mfmaccel.finetune.data import pixel_tensor, val_subset
from mfmaccel.hw.intexec.dinov2 import convert_dinov2
from mfmaccel.hw.intexec.quality import (
    benchmark_splits,
    calibration_pixels,
    feature_cosine,
    vision_agreement,
)
from mfmaccel.hw.intexec.vit import IntegerTower
from mfmaccel.models import load_model
from mfmaccel.spiking.tiers import TIER_BITS, TIERS, TowerTiers, fp16_bytes, program_memory
from mfmaccel.spiking.vit import SpikingDinov2

MODEL = "medvlm"
DEFAULTS = {"calibration": 64, "sensitivity_images": 64, "images": 64, "select_images": 32,
            "questions": 208, "equal_to": 3}
UNIFORM = (8, 4, 3)
FULL = ("uniform-3", "best")
CUT = 0.8
WITHOUT = (2,)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@torch.inference_mode()
def spiking_equals(program, pixels: torch.Tensor) -> dict:
    """Whether the settled spiking tower (graded messages) equals `program` on `pixels`."""
    hidden, run = SpikingDinov2(program, levels=None).run(pixels)
    return {"images": len(pixels), "settled_at": run.settled_at,
            "bit_exact": bool(torch.equal(hidden, program.hidden_states(pixels)[-1][0]))}


def measure(name: str, choice: dict, weight_bits: dict[str, int], context: dict) -> dict:
    """Everything but VQA for one assignment."""
    tower = context["tower"]
    started = time.perf_counter()
    program = convert_dinov2(tower, list(context["calibration"].split(16)), per_token=False,
                             weight_bits=weight_bits)
    stand_in = IntegerTower(program, tower.config.patch_size)
    memory = program_memory(program)
    entry = {
        "name": name, **choice, "memory": memory.to_dict(),
        "linear_bytes_program": memory.weight_bytes - memory.patch_bytes,
        "cosine_test": feature_cosine(tower, stand_in, context["test_pixels"]),
        "cosine_select": feature_cosine(tower, stand_in, context["select_pixels"]),
        "spiking": spiking_equals(program, context["test_pixels"][:2]),
    }
    entry["seconds"] = {"build_and_cosines": time.perf_counter() - started}
    log(f"{name}: cut {memory.cut:.4f}, cosine test {entry['cosine_test']:.4f}, "
        f"select {entry['cosine_select']:.4f}, spiking exact {entry['spiking']['bit_exact']}")
    context["towers"][name] = stand_in
    return entry


def vqa(entry: dict, context: dict, questions: int) -> dict:
    started = time.perf_counter()
    found = vision_agreement(context["model"], questions=questions,
                             calibration=context["calibration_count"], per_token=False,
                             stand_in=context["towers"][entry["name"]],
                             reference=context["float"][questions])
    out = found.to_dict()
    out["seconds"] = time.perf_counter() - started
    log(f"  {entry['name']} on {found.questions} questions: {found.integer_accuracy:.4f} "
        f"(float {found.float_accuracy:.4f}) in {out['seconds']:.0f} s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weight-bits", nargs="+", type=int, default=list(TIER_BITS))
    parser.add_argument("--uniform", nargs="+", type=int, default=list(UNIFORM))
    parser.add_argument("--cut", type=float, default=CUT)
    parser.add_argument("--without", nargs="*", type=int, default=list(WITHOUT),
                        help="bit-widths left out of a second search at the --cut budget "
                             "(none: no second search)")
    parser.add_argument("--full", nargs="*", default=list(FULL),
                        help="assignments scored on every test question besides float "
                             "(uniform-<b>, block@<budget>, module@<budget>, best, all)")
    for name, value in DEFAULTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=value)
    parser.add_argument("--note", default="")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    model = load_model(MODEL)
    tower = model.module.model.vision_tower
    benchmark, _, test = benchmark_splits(model, args.calibration)
    pixels = calibration_pixels(model, args.calibration + args.select_images)
    calibration, select = pixels[:args.calibration], pixels[args.calibration:]
    test_pixels = pixel_tensor(model.processor, [s.image for s in test[:args.images]])
    context = {"model": model, "tower": tower, "calibration": calibration,
               "calibration_count": args.calibration, "test_pixels": test_pixels,
               "select_pixels": select, "towers": {}, "float": {}}
    log(f"sensitivity on {args.sensitivity_images} train images")
    tiers = TowerTiers(tower, calibration[:args.sensitivity_images], bits=args.weight_bits,
                       modules_tier=True)
    log(f"  {tiers.sensitivity.seconds['total']:.0f} s")
    choices = [tiers.uniform(b) for b in args.uniform]
    equal = tiers.uniform(args.equal_to).linear_bytes
    budgets = {f"uniform-{args.equal_to}": equal}
    cut_budget = tiers.linear_budget(args.cut)
    if cut_budget != equal:
        budgets[f"cut-{args.cut:g}"] = cut_budget
    for label, budget in budgets.items():
        for tier in TIERS:
            choice = tiers.mixed(budget, tier)
            choice.name = f"{tier}@{label}"
            choices.append(choice)
    if args.without and cut_budget != equal:  # at equal bytes only uniform fits without them
        narrow = tiers.restricted([b for b in args.weight_bits if b not in args.without])
        for tier in TIERS:
            choice = narrow.mixed(cut_budget, tier)
            choice.name = f"{tier}@cut-{args.cut:g}-no{'-'.join(map(str, args.without))}"
            choices.append(choice)
    entries = []
    for choice in choices:
        fields = choice.to_dict()
        entries.append(measure(fields.pop("name"), fields, choice.weight_bits, context))
    mixed_equal = [e for e in entries if e["name"].endswith(f"@uniform-{args.equal_to}")]
    best = max(mixed_equal, key=lambda e: e["cosine_select"])["name"]
    full = {e["name"] for e in entries} if "all" in args.full else \
        {best if n == "best" else n for n in args.full}
    unknown = full - {e["name"] for e in entries}
    if unknown:
        raise SystemExit(f"--full {sorted(unknown)[0]}: not an assignment of this run; "
                         f"choose from {', '.join(e['name'] for e in entries)}, best or all")
    log(f"VQA: float and every assignment on {args.questions or 'no'} subset; float and "
        f"{', '.join(sorted(full)) or 'nothing else'} on all questions")
    runs = {q: None for q in (args.questions, 0) if (q and q < len(test)) or (not q and full)}
    for questions in runs:  # once each: --questions 0 asks only for the full set
        subset = val_subset(test, questions) if questions else test
        t = time.perf_counter()
        context["float"][questions] = vqa_accuracy(model, subset)
        log(f"  float on {len(subset)} questions: {context['float'][questions].accuracy:.4f} "
            f"in {time.perf_counter() - t:.0f} s")
        for entry in entries:
            if questions == 0 and entry["name"] not in full:
                continue
            entry["vqa_full" if questions == 0 else "vqa_subset"] = vqa(entry, context,
                                                                      questions)
    report = {
        "model": MODEL, "benchmark": benchmark,
        "settings": {**{k: getattr(args, k) for k in DEFAULTS}, "bits": args.weight_bits,
                     "uniform": args.uniform, "cut": args.cut, "without": args.without,
                     "full": sorted(full), "note": args.note,
                     "spec": "per output channel, symmetric, round-to-nearest",
                     "program": "convert_dinov2 per_token=False (= the settled spiking tower)",
                     "patch_embedding": "8 bits, counted"},
        "fp16_bytes": fp16_bytes(tower), "budgets": budgets, "best_mixed": best,
        "float": {str(q or "all"): r.to_dict() for q, r in context["float"].items()},
        "sensitivity": tiers.sensitivity.to_dict(),
        "assignments": entries,
        "seconds": time.perf_counter() - started,
    }
    options = [f"{k.replace('_', '')}{getattr(args, k)}" for k, v in DEFAULTS.items()
               if getattr(args, k) != v]
    if args.weight_bits != list(TIER_BITS):
        options.insert(0, "bits" + "-".join(map(str, args.weight_bits)))
    if args.uniform != list(UNIFORM):
        options.append("uniform" + "-".join(map(str, args.uniform)))
    if args.cut != CUT:
        options.append(f"cut{args.cut:g}")
    if args.without != list(WITHOUT):
        options.append("without" + ("-".join(map(str, args.without)) or "none"))
    if sorted(full) != sorted({best if n == "best" else n for n in FULL}):
        options.append("full" + "-".join(sorted(n.replace("@", "") for n in args.full)))
    path = recordfile.record_path(["spiking-tiers", *options], recordfile.commit()) \
        if args.record else None
    recordfile.emit(report, path)


if __name__ == "__main__":
    main()

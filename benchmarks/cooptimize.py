"""Co-optimised execution knobs on medvlm against each knob alone (issue 23). Prints JSON.

1. The search (`pipeline.cooptimize.cooptimize_loaded`): `--trials` settings of resolution,
   patch stride, ToMe and FastV on the first `--limit` medvqa2 val questions, under an accuracy
   drop of at most `--max-drop`, each also priced on the `--arch` accelerator preset; the
   chosen point (lowest CPU prefill, or FLOPs with `--prefer flops`) held out on the first
   `--limit` test questions.
2. ToMe alone (r = 1..4) and FastV alone (our layer 1, which is the paper's K=2; keep 0.75,
   0.5, 0.25) on the same val questions: does the co-optimised front dominate each at equal
   FLOPs (a feasible front point with at least its accuracy at no more of its FLOPs)?
3. The chosen point's prefill against the unchanged model's on `--timing` test prompts,
   alternating which goes first, `--repeats` rounds, medians: the speed-up and FLOPs ratio.

Usage: python benchmarks/cooptimize.py [--model medvlm] [--trials 24] [--limit 100]
       [--max-drop 0.01] [--arch edge] [--prefer cpu] [--timing 16] [--repeats 5] [--record]
"""

from __future__ import annotations

import argparse
import os
import time

import recordfile
from knobs_speed import prefill_medians

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py


from mfmaccel.evaluate.run import vqa_samples
from mfmaccel.execute.cooptimize import measure
from mfmaccel.execute.settings import Knobs, apply_knobs
from mfmaccel.models import load_model
from mfmaccel.pipeline.cooptimize import accelerator_price, cooptimize_loaded

TOME = (1, 2, 3, 4)
FASTV_LAYER, FASTV_KEEPS = 1, (0.75, 0.5, 0.25)


def alone(model, samples, args, price) -> list[dict]:
    """Each single knob's setting measured like a search trial."""
    settings = ([Knobs(merge_r=r) for r in TOME]
                + [Knobs(drop_layer=FASTV_LAYER, drop_keep=k) for k in FASTV_KEEPS])
    rows = []
    for knobs in settings:
        trial = measure(apply_knobs(model, knobs), samples, timing=8, repeats=2, price=price)
        rows.append({"knobs": knobs.describe(), "accuracy": trial.accuracy,
                     "gflops": trial.gflops, "prefill_ms": round(trial.prefill_ms, 1),
                     "image_tokens": trial.image_tokens})
    return rows


def dominated(rows: list[dict], result) -> list[dict]:
    """For each single-knob point, the best feasible front accuracy at no more of its FLOPs."""
    front = [result.trials[i] for i in result.front]
    for row in rows:
        cheaper = [t.accuracy for t in front if t.gflops <= row["gflops"] * (1 + 1e-6)]
        row["front_best_at_its_flops"] = max(cheaper) if cheaper else None
        row["dominated_by_front"] = bool(cheaper) and max(cheaper) >= row["accuracy"]
    return rows


def speedup(model, chosen, samples, *, repeats: int) -> dict:
    """Medians of the prefill (processor + forward) per prompt, the order flipping each round
    (`knobs_speed.prefill_medians`)."""
    medians = prefill_medians({"unchanged": model, "chosen": chosen}, samples, repeats=repeats)
    return {"unchanged_ms": round(medians["unchanged"] * 1e3, 1),
            "chosen_ms": round(medians["chosen"] * 1e3, 1),
            "speedup": round(medians["unchanged"] / medians["chosen"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="medvlm")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--test-limit", type=int, default=None,
                        help="held-out test questions (default: --limit; 0: the whole split)")
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--arch", default="edge")
    parser.add_argument("--timing", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prefer", choices=("cpu", "flops"), default="cpu",
                        help="what the chosen point is the lowest of")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    model = load_model(args.model)
    began = time.perf_counter()
    result, held = cooptimize_loaded(model, task="medvqa2", trials=args.trials,
                                     limit=args.limit, max_drop=args.max_drop, arch=args.arch,
                                     prefer=args.prefer, seed=args.seed,
                                     test_limit=args.limit if args.test_limit is None
                                     else args.test_limit or None)
    search_seconds = time.perf_counter() - began
    val = vqa_samples(None, "val", limit=args.limit, benchmark="medvqa2")
    rows = dominated(alone(model, val, args, accelerator_price(args.arch)), result)
    chosen = apply_knobs(model, Knobs(**result.chosen))
    test = vqa_samples(None, "test", limit=args.timing, benchmark="medvqa2")
    best, base = result.trials[result.chosen_trial], result.baseline
    report = {
        "model": args.model, "trials": args.trials, "questions": args.limit,
        "max_drop": args.max_drop, "arch": args.arch, "search_seconds": round(search_seconds),
        "chosen": result.chosen,
        "val": {"unchanged": base.accuracy, "chosen": best.accuracy},
        "test": held.to_dict(),
        "gflops": {"unchanged": round(base.gflops, 3), "chosen": round(best.gflops, 3),
                   "ratio": round(best.gflops / base.gflops, 3)},
        "accelerator": {"unchanged": base.accelerator, "chosen": best.accelerator},
        "prefill": speedup(model, chosen, test, repeats=args.repeats),
        "single_knobs": rows,
        "front": [result.trials[i].to_dict() for i in result.front],
        "search": result.to_dict(),
        "load_average_at_end": os.getloadavg(),
        "commit": recordfile.commit(),
    }
    path = (recordfile.record_path(["cooptimize", args.model], report["commit"])
            if args.record else None)
    recordfile.emit(report, path)


if __name__ == "__main__":
    main()

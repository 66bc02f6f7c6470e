"""medvlm's VQA with its DINOv2 tower run as a spiking network and stopped after T steps (issue
25: "medvlm VQA with a spiking tower within 1.5 points"). Prints JSON.

The tower's static-scale integer program (`convert_dinov2(..., per_token=False)`, calibrated on
`--calibration` train images of medvqa2) runs as a spiking network at `--levels` unit spikes a
step (`spiking.stopped`): each test image once, up to the last of `--steps` or until it settles,
its last hidden states kept after each step count. On a type-balanced subset of `--questions`
medvqa2 test questions (0: all 1,040; each has its own image), in one run: float, the integer
tower (what a settled spiking tower equals bit for bit), and the spiking tower stopped after
each of `--steps`, with the features' cosine to float, the spike rate and ACs per integer MAC.

Usage: python benchmarks/spiking_vqa.py [--questions 104] [--steps 32 64 128] [--levels 16]
       [--calibration 64] [--record]
`--record` also writes benchmarks/results/<date>-spiking-vqa[-options]-at-<commit>.json.
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
from mfmaccel.hw.intexec.quality import benchmark_splits, vision_agreement
from mfmaccel.hw.intexec.vit import IntegerTower
from mfmaccel.models import load_model
from mfmaccel.spiking.stopped import StoppedRuns, StoppedTower
from mfmaccel.spiking.vit import tower_macs

MODEL = "medvlm"
DEFAULTS = {"questions": 104, "levels": 16, "calibration": 64}
STEPS = (32, 64, 128)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def scored(model, stand_in, args, reference) -> dict:
    """VQA with `stand_in` as the tower on the run's questions, beside float's result."""
    started = time.perf_counter()
    found = vision_agreement(model, questions=args.questions, calibration=args.calibration,
                             per_token=False, stand_in=stand_in, reference=reference)
    return {**found.to_dict(), "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in DEFAULTS.items():
        parser.add_argument(f"--{name}", type=int, default=value)
    parser.add_argument("--steps", nargs="+", type=int, default=list(STEPS))
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    model = load_model(MODEL)
    tower = model.module.model.vision_tower
    benchmark, chosen, test = benchmark_splits(model, args.calibration)
    questions = val_subset(test, args.questions) if args.questions else test
    calibration = pixel_tensor(model.processor, [s.image for s in chosen])
    with torch.inference_mode():
        program = convert_dinov2(tower, list(calibration.split(16)), per_token=False)
    pixels = pixel_tensor(model.processor, [s.image for s in questions])
    runs = StoppedRuns(program, levels=args.levels or None, steps=args.steps)
    log(f"spiking tower on {len(pixels)} images, up to {runs.steps[-1]} steps")
    t = time.perf_counter()
    runs.fill(pixels)
    spiking_seconds = time.perf_counter() - t
    log(f"  {spiking_seconds:.0f} s; settled {sum(s is not None for s in runs.settled_at)} of "
        f"{len(runs.settled_at)} batches")
    t = time.perf_counter()
    reference = vqa_accuracy(model, questions)
    log(f"float: {reference.accuracy:.4f} on {reference.n} in {time.perf_counter() - t:.0f} s")
    integer = scored(model, IntegerTower(program, tower.config.patch_size), args, reference)
    log(f"integer (= settled spiking): {integer['integer_accuracy']:.4f}")
    stopped = {}
    for steps in runs.steps:
        stopped[steps] = scored(model, StoppedTower(runs, steps), args, reference)
        log(f"spiking after {steps} steps: {stopped[steps]['integer_accuracy']:.4f}, "
            f"cosine {stopped[steps]['feature_cosine']:.4f}")
    report = {
        "model": MODEL, "benchmark": benchmark,
        "settings": {**{k: getattr(args, k) for k in DEFAULTS}, "steps": runs.steps,
                     "program": "convert_dinov2 per_token=False, int8 weights",
                     "spiking": "spiking.stopped.StoppedRuns, each image run once, batches "
                                "of 4"},
        "float": reference.to_dict(), "integer": integer, "stopped": stopped,
        "settled_batches": sum(s is not None for s in runs.settled_at),
        "batches": len(runs.settled_at), "settle_steps": runs.settled_at,
        "spike_rate": runs.spike_rate,
        "accumulates_per_mac": runs.accumulates / tower_macs(program, len(pixels)),
        "seconds": {"spiking": spiking_seconds, "total": time.perf_counter() - started},
    }
    options = [f"{k}{getattr(args, k)}" for k, v in DEFAULTS.items() if getattr(args, k) != v]
    if runs.steps != list(STEPS):
        options.append("steps" + "-".join(map(str, runs.steps)))
    path = recordfile.record_path(["spiking-vqa", *options], recordfile.commit()) \
        if args.record else None
    recordfile.emit(report, path)


if __name__ == "__main__":
    main()

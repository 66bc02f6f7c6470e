"""How far frozen DINOv2 features go on Br35H tumour presence, and what the published figures
measure (issue 22). Prints JSON.

Issue 22 asks medvlm v2 for >= 95% on tumour presence and quotes published Br35H CNNs at
98-99%. Br35H holds many copies of one scan (flipped, re-contrasted, re-encoded); medvqa2 tests
on whole held-out scans (br35h.py's near-duplicate groups), while most published figures split
the files at random, with copies of a test scan in train. This script measures both, on the
features medvlm v2's projector reads: `dinov2-s14`'s hidden_states[-1] (before the final
LayerNorm), every token, extracted once per input size for all 3,000 images (each scan squared
to 224 pixels as medvqa2 shows it, then resized by the processor to the size probed).

1. Heads on medvqa2's own split (train 2,060 images / val 300 / test 640, 90 test scans):
   the linear probe (`evaluate.probe.linear_probe` on the class token beside the mean patch
   token, L2 chosen on val) and a token-MLP head (`evaluate.probe.train_token_head`: a per-patch
   MLP 384->128->2, logsumexp over patches, AdamW for `--epochs`, seed 0). Val holds 37 scans,
   too few to pick an epoch reliably, so the token head's test accuracy is given both at the
   epoch best on val and at the last epoch.
2. The protocol comparison on all 3,000 images, token-MLP head, `--protocol-epochs` epochs, one
   run per seed (`--seeds`, the seed draws both the split and the head): (a) a random 80/20
   split of the files, the usual published protocol; (b) 80/20 by near-duplicate group: each
   label's groups in the seed's order join test while they fit under 20% of that label's
   images (balanced, as (a) is by chance). For each: test size, accuracy per label, distinct
   groups in test, and the fraction of test images whose group also has an image in train (0
   for (b) by construction).

Usage: python benchmarks/tumour_ceiling.py [--sizes 112 224] [--epochs 30]
       [--protocol-epochs 15] [--seeds 0 1 2] [--limit N] [--record]
`--limit N` keeps N evenly spaced images of each split (a quick run, not a figure); `--record`
also writes the JSON to benchmarks/results/<date>-tumour-ceiling-at-<commit>.json (options not
at their default are named before `-at`, e.g. `-px112`, `-limit90`), as benchmarks/probes.py
names its records.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import torch

from mfmaccel.data.medvqa import br35h
from mfmaccel.data.medvqa.views import VIEW_SIZE
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.probe import (
    Labelled,
    LabelledTokens,
    TokenHeadRun,
    linear_probe,
    token_accuracy,
    train_token_head,
)
from mfmaccel.models import load_model

DINOV2 = "dinov2-s14"
SPLITS = ("train", "val", "test")
SIZES = (112, 224)
EPOCHS = 30
PROTOCOL_EPOCHS = 15
SEEDS = (0, 1, 2)
TEST_FRACTION = 0.2
BATCH = 16


def split_items(limit: int | None) -> dict[str, list[tuple[int, br35h.Br35hImage]]]:
    """{split: [(group, image)]} of medvqa2's Br35H split; `limit` keeps that many evenly
    spaced images of each (the lists are sorted by label, so both labels stay)."""
    items = {split: br35h.split_images(split) for split in SPLITS}
    if limit is None:
        return items
    return {split: rows[::max(1, len(rows) // limit)][:limit] for split, rows in items.items()}


@torch.no_grad()
def dinov2_tokens(model, images: list[br35h.Br35hImage], *, size: int, layer: int = -1,
                  half: bool = True) -> torch.Tensor:
    """(images, 1 + patches, hidden): hidden_states[layer], every token; by default the last,
    what LLaVA's projector reads, in float16 (halving the 1.2 GB that 3,000 images' tokens
    take at 224)."""
    rows = []
    for start in range(0, len(images), BATCH):
        pictures = [br35h.square_image(image.name, VIEW_SIZE)
                    for image in images[start:start + BATCH]]
        pixels = model.processor(images=pictures, size={"height": size, "width": size},
                                 return_tensors="pt")["pixel_values"]
        out = model.module(pixel_values=pixels, output_hidden_states=True).hidden_states[layer]
        rows.append(out.half() if half else out)
    return torch.cat(rows)


def class_and_mean(tokens: torch.Tensor) -> torch.Tensor:
    """The linear probe's read-out: class token beside the mean patch token, float32."""
    return torch.cat([tokens[:, 0].float(), tokens[:, 1:].float().mean(1)], dim=-1)


def by_label(run: TokenHeadRun, split: LabelledTokens) -> dict[str, float]:
    """The trained head's test accuracy on each label's images alone."""
    accuracies = {}
    for label in sorted(set(split.labels)):
        rows = torch.tensor([i for i, value in enumerate(split.labels) if value == label])
        alone = LabelledTokens(split.tokens[rows], [label] * len(rows))
        accuracies[label] = round(token_accuracy(run.head, alone, run.classes), 4)
    return accuracies


def own_split_heads(tokens: dict[str, torch.Tensor], labels: dict[str, list[str]], *,
                    epochs: int) -> dict:
    """Section 1: the linear probe and the token head on medvqa2's train / val / test."""
    probe = linear_probe(**{split: Labelled(class_and_mean(tokens[split]), labels[split])
                            for split in SPLITS})
    patches = {split: LabelledTokens(tokens[split][:, 1:], labels[split]) for split in SPLITS}
    run = train_token_head(patches["train"], epochs=epochs, seed=0,
                           scored={"val": patches["val"], "test": patches["test"]})
    best = run.best_epoch("val")
    return {
        "linear_probe": {"test": round(probe.accuracy, 4), "l2": probe.l2,
                         "val": {l2: round(a, 4) for l2, a in probe.val_accuracy.items()}},
        "token_mlp": {
            "epochs": epochs, "best_val_epoch": best,
            "val_at_best": round(run.history["val"][best - 1], 4),
            "test_at_best_val": round(run.history["test"][best - 1], 4),
            "val_last": round(run.history["val"][-1], 4),
            "test_last": round(run.history["test"][-1], 4),
            "test_last_by_label": by_label(run, patches["test"]),
            "test_by_epoch": [round(a, 4) for a in run.history["test"]],
            "val_by_epoch": [round(a, 4) for a in run.history["val"]],
        },
    }


def file_split(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train rows, test rows): a random 80/20 split of the files."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    cut = count - round(TEST_FRACTION * count)
    return order[:cut].sort().values, order[cut:].sort().values


def group_split(groups: torch.Tensor, labels: list[str], seed: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(train rows, test rows): for each label, its near-duplicate groups in a seeded order join
    test while they fit under 20% of that label's images, so test is balanced like the file
    split's; a scan's copies are never on both sides (a group mixing labels stays in train)."""
    chosen = []
    order = torch.Generator().manual_seed(seed)
    for label in sorted(set(labels)):
        mine = torch.tensor([value == label for value in labels])
        pure = groups[mine].unique()
        pure = pure[~torch.isin(pure, groups[~mine])]
        sizes = (groups[mine].unsqueeze(1) == pure).sum(0)
        room = round(TEST_FRACTION * int(mine.sum()))
        for index in torch.randperm(len(pure), generator=order).tolist():
            if sizes[index] <= room:
                chosen.append(int(pure[index]))
                room -= int(sizes[index])
    in_test = torch.isin(groups, torch.tensor(chosen, dtype=groups.dtype))
    return in_test.logical_not().nonzero().flatten(), in_test.nonzero().flatten()


def split_facts(train: torch.Tensor, test: torch.Tensor, groups: torch.Tensor,
                labels: list[str]) -> dict:
    """What a split's test side holds: images, labels, scans, and copies of its scans in train."""
    test_groups = groups[test]
    copied = torch.isin(test_groups, groups[train])
    return {"train_images": len(train), "test_images": len(test),
            "test_yes": sum(labels[i] == "yes" for i in test.tolist()),
            "test_groups": len(test_groups.unique()),
            "test_with_train_copy": round(copied.float().mean().item(), 4)}


def protocol(name: str, tokens: torch.Tensor, groups: torch.Tensor, labels: list[str], *,
             seeds: list[int], epochs: int) -> dict:
    """Section 2, one protocol: the token head trained and scored once per seed."""
    runs = []
    for seed in seeds:
        train, test = (file_split(len(labels), seed) if name == "file_80_20"
                       else group_split(groups, labels, seed))
        scored = LabelledTokens(tokens[test], [labels[i] for i in test.tolist()])
        run = train_token_head(
            LabelledTokens(tokens[train], [labels[i] for i in train.tolist()]), seed=seed,
            epochs=epochs, scored={"test": scored})
        runs.append({"seed": seed, "test": round(run.history["test"][-1], 4),
                     "test_by_label": by_label(run, scored),
                     **split_facts(train, test, groups, labels)})
    accuracies = [r["test"] for r in runs]
    return {"mean": round(sum(accuracies) / len(accuracies), 4), "epochs": epochs,
            "per_seed": runs}


def measure_size(model, items: dict, *, size: int, args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    tokens = {split: dinov2_tokens(model, [image for _, image in rows], size=size)
              for split, rows in items.items()}
    images = sum(len(rows) for rows in items.values())
    extracted = time.perf_counter() - start
    labels = {split: [image.label for _, image in rows] for split, rows in items.items()}
    own = own_split_heads(tokens, labels, epochs=args.epochs)
    print(f"{size} px: features {extracted / images * 1000:.0f} ms an image; own split: linear "
          f"{own['linear_probe']['test']}, token MLP {own['token_mlp']['test_at_best_val']} "
          f"(best val) / {own['token_mlp']['test_last']} (last)", file=sys.stderr)
    every = torch.cat([tokens[split][:, 1:] for split in SPLITS])
    del tokens
    groups = torch.tensor([group for split in SPLITS for group, _ in items[split]])
    every_label = [label for split in SPLITS for label in labels[split]]
    protocols = {name: protocol(name, every, groups, every_label, seeds=args.seeds,
                                epochs=args.protocol_epochs)
                 for name in ("file_80_20", "group_80_20")}
    print(f"{size} px: file split {protocols['file_80_20']['mean']}, group split "
          f"{protocols['group_80_20']['mean']}", file=sys.stderr)
    return {"tokens": list(every.shape[1:]), "feature_seconds": round(extracted, 1),
            "feature_seconds_per_image": round(extracted / images, 4),
            "own_split": own, "protocols": protocols,
            "seconds": round(time.perf_counter() - start, 1)}


def summary(by_size: dict) -> dict:
    """{size: {figure: test accuracy}}: the table to quote."""
    table = {}
    for size, result in by_size.items():
        own, protocols = result["own_split"], result["protocols"]
        table[size] = {
            "own_split_linear_probe": own["linear_probe"]["test"],
            "own_split_token_mlp_best_val_epoch": own["token_mlp"]["test_at_best_val"],
            "own_split_token_mlp_last_epoch": own["token_mlp"]["test_last"],
            "file_80_20_token_mlp_mean": protocols["file_80_20"]["mean"],
            "group_80_20_token_mlp_mean": protocols["group_80_20"]["mean"],
        }
    return table


def record_path(args: argparse.Namespace, at: str) -> Path:
    """<date>-tumour-ceiling[-each option not at its default]-at-<commit>.json, as
    benchmarks/probes.py names its records: different options never overwrite each other."""
    parts = ["tumour-ceiling"]
    if args.sizes != list(SIZES):
        parts.append("px" + "-".join(map(str, args.sizes)))
    if args.epochs != EPOCHS:
        parts.append(f"epochs{args.epochs}")
    if args.protocol_epochs != PROTOCOL_EPOCHS:
        parts.append(f"protocol-epochs{args.protocol_epochs}")
    if args.seeds != list(SEEDS):
        parts.append("seeds" + "-".join(map(str, args.seeds)))
    if args.limit is not None:
        parts.append(f"limit{args.limit}")
    return recordfile.record_path(parts, at)


def check_args(args: argparse.Namespace) -> None:
    patch = 14  # dinov2-s14's patch: a side that is not a multiple would drop border pixels
    if bad := [size for size in args.sizes if size <= 0 or size % patch]:
        raise UserInputError(f"--sizes {bad} are not positive multiples of the {patch}-pixel "
                             "patch; pick e.g. 112 or 224")
    if args.epochs < 1 or args.protocol_epochs < 1 or (args.limit is not None and args.limit < 2):
        raise UserInputError("--epochs and --protocol-epochs need at least 1, --limit at "
                             "least 2 images a split")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES),
                        help="input sides in pixels, multiples of 14")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="token head, own split")
    parser.add_argument("--protocol-epochs", type=int, default=PROTOCOL_EPOCHS)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--limit", type=int, default=None, help="N images of each split")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    check_args(args)
    started = time.perf_counter()
    load_before = [round(load, 2) for load in os.getloadavg()]
    items = split_items(args.limit)
    model = load_model(DINOV2)
    report = {
        "command": "python benchmarks/tumour_ceiling.py " + " ".join(sys.argv[1:]),
        "commit": recordfile.commit(), "threads": torch.get_num_threads(), "model": model.source,
        "features": "hidden_states[-1], every token, float16",
        "images": {split: len(rows) for split, rows in items.items()},
        "scans": {split: len({group for group, _ in rows}) for split, rows in items.items()},
        "load_average_at_start": load_before,
        "sizes": {size: measure_size(model, items, size=size, args=args) for size in args.sizes},
    }
    report["summary"] = summary(report["sizes"])
    report["load_average_at_end"] = [round(load, 2) for load in os.getloadavg()]
    report["seconds"] = round(time.perf_counter() - started, 1)
    recordfile.emit(report, record_path(args, report["commit"]) if args.record else None)


if __name__ == "__main__":
    main()

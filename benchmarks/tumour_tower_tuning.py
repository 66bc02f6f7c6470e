"""Does tuning DINOv2's last blocks lift tumour presence past the frozen tower's ceiling? An
accuracy lever for medvlm v2 (issue 22), measured on medvqa2's own Br35H split (train 2,060
images / val 300 / test 640, whole scans held out). Prints JSON.

benchmarks/tumour_ceiling.py measured what frozen `dinov2-s14` features give a per-patch MLP
head (`evaluate.probe.TokenMLP`): 92.0% at 112 px, 94.4% at 224, against the issue's 95% target.
Here the same head trains jointly with the tower's last `--blocks` transformer blocks (their
input, the frozen blocks' output, is computed once per image; AdamW, the blocks at `--tower-lr`,
the head at the probe's learning rate), and, in the same run with the same seed, epochs and
batches, the head alone on the frozen tower (`--blocks 0`). Each gives test accuracy at the
epoch best on val (val holds 37 scans: a noisy pick) and at the last epoch. No augmentation:
the cached inputs are of the unaugmented views, as the VLM's cached features are.

Usage: python benchmarks/tumour_tower_tuning.py [--blocks 0 2 4] [--size 112] [--epochs 10]
       [--tower-lr 2e-5] [--limit N] [--record]
`--record` also writes benchmarks/results/<date>-tumour-tower-tuning[-options]-at-<commit>.json.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import torch
import torch.nn.functional as F
from tumour_ceiling import dinov2_tokens

from mfmaccel.data.medvqa import br35h
from mfmaccel.evaluate.probe import (
    TOKEN_BATCH,
    TOKEN_LR,
    TOKEN_WEIGHT_DECAY,
    TokenMLP,
    token_statistics,
)
from mfmaccel.models import load_model

SPLITS = ("train", "val", "test")


class TunedTop(torch.nn.Module):
    """The tower's last blocks followed by the per-patch MLP head on their patch tokens."""

    def __init__(self, blocks: list[torch.nn.Module], head: TokenMLP) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(blocks)
        self.head = head

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(tokens[:, 1:])


@torch.no_grad()
def accuracy(top: TunedTop, tokens: torch.Tensor, targets: torch.Tensor) -> float:
    top.eval()
    predicted = torch.cat([top(tokens[i:i + 64]).argmax(-1) for i in range(0, len(tokens), 64)])
    return (predicted == targets).float().mean().item()


def train_top(model, inputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], *,
              blocks: int, args: argparse.Namespace) -> dict:
    """Train the last `blocks` blocks (0: none) and the head; test accuracy per epoch."""
    layers = model.module.encoder.layer
    tuned = [copy.deepcopy(layer) for layer in layers[len(layers) - blocks:]]
    with torch.no_grad():  # the head standardizes by train's tokens at the start
        start = inputs["train"]
        for block in tuned:
            start = block(start)
        mean, std = token_statistics(start[:, 1:])
    torch.manual_seed(args.seed)
    head = TokenMLP(mean, std, classes=2)
    top = TunedTop(tuned, head)
    groups = [{"params": head.parameters(), "lr": TOKEN_LR}]
    if tuned:
        groups.append({"params": [p for b in tuned for p in b.parameters()], "lr": args.tower_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=TOKEN_WEIGHT_DECAY)
    order = torch.Generator().manual_seed(args.seed)
    history: dict[str, list[float]] = {"val": [], "test": []}
    began = time.perf_counter()
    for _ in range(args.epochs):
        top.train()
        for batch in torch.randperm(len(targets["train"]), generator=order).split(TOKEN_BATCH):
            loss = F.cross_entropy(top(inputs["train"][batch]), targets["train"][batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        for split in history:
            history[split].append(round(accuracy(top, inputs[split], targets[split]), 4))
    best = history["val"].index(max(history["val"])) + 1
    return {"blocks_tuned": blocks, "best_val_epoch": best,
            "test_at_best_val": history["test"][best - 1], "test_last": history["test"][-1],
            "val_by_epoch": history["val"], "test_by_epoch": history["test"],
            "train_seconds": round(time.perf_counter() - began, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--tower-lr", type=float, default=2e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="images per split (quick run)")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    model = load_model("dinov2-s14")
    depth = len(model.module.encoder.layer)
    if not all(0 <= b <= depth for b in args.blocks):
        parser.error(f"--blocks must lie in 0..{depth}")
    first = depth - max(args.blocks)
    items = {split: br35h.split_images(split) for split in SPLITS}
    if args.limit:
        items = {s: rows[::max(1, len(rows) // args.limit)][:args.limit]
                 for s, rows in items.items()}
    began = time.perf_counter()
    cached = {s: dinov2_tokens(model, [image for _, image in rows], size=args.size,
                               layer=first, half=False)  # the output of the first `first` blocks
              for s, rows in items.items()}
    features_seconds = time.perf_counter() - began
    targets = {s: torch.tensor([int(image.label == "yes") for _, image in rows])
               for s, rows in items.items()}
    runs = []
    for blocks in args.blocks:  # the frozen blocks between `first` and the tuned ones run once
        skip = model.module.encoder.layer[first:depth - blocks]
        with torch.no_grad():
            inputs = {}
            for split, tokens in cached.items():
                for layer in skip:
                    tokens = layer(tokens)
                inputs[split] = tokens
        runs.append(train_top(model, inputs, targets, blocks=blocks, args=args))
    report = {"benchmark": "tumour presence, medvqa2's Br35H split (whole scans held out)",
              "size": args.size, "epochs": args.epochs, "tower_lr": args.tower_lr,
              "seed": args.seed, "images": {s: len(r) for s, r in items.items()},
              "features_seconds": round(features_seconds, 1), "runs": runs,
              "commit": recordfile.commit()}
    options = [f"px{args.size}"] if args.size != 112 else []
    options += [f"limit{args.limit}"] if args.limit else []
    path = (recordfile.record_path(["tumour-tower-tuning", *options], report["commit"])
            if args.record else None)
    recordfile.emit(report, path)


if __name__ == "__main__":
    main()

"""The training loop: AdamW, linear warm-up then cosine decay, gradient clipping, a fixed seed,
and the loss of every step kept as the phase's curve.

`answer_loss` runs the language model to its last hidden state and applies the LM head only
where a label is set (the answer or caption tokens), so the 49k-way softmax is computed for a
handful of positions instead of the whole sequence.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mfmaccel.finetune.collate import IGNORE


def answer_loss(module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions of a LLaVA-style model."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if not (hasattr(module, "model") and hasattr(module, "lm_head")):
        return module(**inputs, labels=labels).loss  # other VLM classes: their own loss
    hidden = module.model(**inputs).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = module.lm_head(hidden[keep])
    return F.cross_entropy(logits.float(), targets[keep])


def batches(count: int, *, batch_size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """`steps` batches of indices into `count` items: seeded shuffled epochs, no repeats within
    an epoch."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(count, generator=generator).tolist()
        yield order[:batch_size]
        del order[:batch_size]


def lr_factor(step: int, *, steps: int, warmup: int, floor: float = 0.1) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to `floor` of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class TrainResult:
    losses: list[float]
    seconds: float


def train(
    step_loss: Callable[[list[int]], torch.Tensor],
    groups: Sequence[dict],
    *,
    count: int,
    batch_size: int,
    steps: int,
    seed: int,
    max_grad_norm: float = 1.0,
    weight_decay: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Run `steps` optimiser steps; `step_loss(indices)` returns the loss of one batch.

    `groups` are AdamW parameter groups ({"params": [...], "lr": ...}); every step's loss is
    recorded. The model is left in eval mode.
    """
    start = time.perf_counter()
    params = [p for group in groups for p in group["params"]]
    if steps == 0 or not params:
        return TrainResult([], 0.0)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
    peaks = [group["lr"] for group in optimizer.param_groups]
    warmup = max(1, steps // 10)
    losses = []
    for step, indices in enumerate(batches(count, batch_size=batch_size, steps=steps, seed=seed)):
        for group, peak in zip(optimizer.param_groups, peaks, strict=True):
            group["lr"] = peak * lr_factor(step, steps=steps, warmup=warmup)
        loss = step_loss(indices)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        losses.append(float(loss.detach()))
        if progress:
            progress(step + 1, steps)
    return TrainResult(losses, time.perf_counter() - start)

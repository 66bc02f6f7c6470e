"""Phase 1a: teach a randomly initialised vision tower to see, cheaply.

A real LLaVA starts from a pretrained CLIP/SigLIP tower; none is available offline, and
learning to see only through the frozen 135M language model costs ~30x more per image. So the
tower first learns the facts its captions state, through small heads that are thrown away:
modality, organ and lesion count from the mean patch token, and for every patch token the
fraction of it covered by lesions (a dense, local target). The heads read the same patch tokens
the projector will read.

What it reaches on the held-out val sources is logged as `val_probe` and kept in the manifest
(docs/finetune.md has the figures): modality and organ are read well, lesion presence
moderately, lesion count poorly.

Augmentations (left-right flips with mirrored lesion centres, grey-scale, low-resolution
blur) stand in for the held-out sources of val/test, which are grey-scale or upscaled from
small images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mfmaccel.data.medvqa.captions import ImageFacts
from mfmaccel.data.medvqa.questions import COUNTS, MODALITIES, ORGANS
from mfmaccel.finetune.config import WarmupConfig
from mfmaccel.finetune.loop import TrainResult, train

MAX_COUNT = len(COUNTS) - 1
POSITIVE_WEIGHT = 20.0  # lesions cover ~1% of the patches: without it, "no lesion" everywhere wins


def image_tokens(module: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The tower's patch features exactly as LLaVA selects them for its projector."""
    config = module.config
    out = module.model.vision_tower(pixel_values, output_hidden_states=True)
    tokens = out.hidden_states[config.vision_feature_layer]
    return tokens[:, 1:] if config.vision_feature_select_strategy == "default" else tokens


class FactHeads(nn.Module):
    """Linear read-outs of the caption facts from patch tokens."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.pooled = nn.Linear(hidden, len(MODALITIES) + len(ORGANS) + len(COUNTS))
        self.cover = nn.Linear(hidden, 1)  # per patch: fraction covered by lesions

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.norm(tokens)
        pooled = self.pooled(tokens.mean(1))
        modality, organ, count = pooled.split([len(MODALITIES), len(ORGANS), len(COUNTS)], -1)
        return {"modality": modality, "organ": organ, "count": count,
                "cover": self.cover(tokens).squeeze(-1)}


def fact_targets(facts: list[ImageFacts], grid: int) -> dict[str, torch.Tensor]:
    """Class indices (-100 where unknown) and per-patch lesion coverage (grid * grid)."""
    cover = torch.zeros(len(facts), grid * grid)
    for row, fact in enumerate(facts):
        if fact.lesion_map is not None:
            full = torch.from_numpy(fact.lesion_map)[None, None]
            cover[row] = F.adaptive_avg_pool2d(full, grid).flatten()
    return {
        "modality": torch.tensor([MODALITIES.index(f.modality) for f in facts]),
        "organ": torch.tensor([ORGANS.index(f.organ) if f.organ else -100 for f in facts]),
        "count": torch.tensor([min(len(f.quadrants), MAX_COUNT) if f.quadrants is not None
                               else -100 for f in facts]),
        "cover": cover,
        "has_lesion_facts": torch.tensor([f.quadrants is not None for f in facts]),
    }


def augment(pixels: torch.Tensor, targets: dict[str, torch.Tensor], grid: int,
            generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Random left-right flips (coverage maps mirrored), grey-scale and low-resolution blur."""
    count, size = pixels.shape[0], pixels.shape[-1]
    draw = torch.rand(count, 3, generator=generator)
    flip = draw[:, 0] < 0.5
    pixels = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)
    maps = targets["cover"].view(count, grid, grid)
    targets = dict(targets, cover=torch.where(flip[:, None, None], maps.flip(-1), maps)
                   .view(count, -1))
    grey = draw[:, 1] < 0.2
    pixels = torch.where(grey[:, None, None, None], pixels.mean(1, keepdim=True).expand_as(pixels),
                         pixels)
    blur = draw[:, 2] < 0.3
    if blur.any():
        side = int(torch.randint(size // 4, size // 2 + 1, (1,), generator=generator))
        small = F.interpolate(pixels[blur], size=(side, side), mode="bilinear", antialias=True)
        pixels = pixels.clone()
        pixels[blur] = F.interpolate(small, size=(size, size), mode="bilinear")
    return pixels, targets


def fact_loss(predicted: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    loss = F.cross_entropy(predicted["modality"], targets["modality"])
    for key in ("organ", "count"):
        if (targets[key] != -100).any():
            loss = loss + F.cross_entropy(predicted[key], targets[key], ignore_index=-100)
    rows = targets["has_lesion_facts"]
    if rows.any():
        loss = loss + F.binary_cross_entropy_with_logits(
            predicted["cover"][rows], targets["cover"][rows],
            pos_weight=torch.tensor(POSITIVE_WEIGHT))
    return loss


def _grid(module: torch.nn.Module, pixels: torch.Tensor) -> int:
    with torch.no_grad():
        tokens = image_tokens(module, pixels[:1].float()).shape[1]
    grid = int(round(tokens**0.5))
    if grid * grid != tokens:
        raise ValueError(f"tower gives {tokens} patch tokens, not a square grid")
    return grid


def warm_up_tower(
    module: torch.nn.Module, pixels: torch.Tensor, facts: list[ImageFacts],
    *, config: WarmupConfig, seed: int, max_grad_norm: float = 1.0, progress=None,
) -> tuple[TrainResult, FactHeads]:
    """Train the tower (and fresh heads) on the caption facts; returns the loss curve."""
    grid = _grid(module, pixels)
    torch.manual_seed(seed)
    heads = FactHeads(module.config.vision_config.hidden_size)
    targets = fact_targets(facts, grid)
    tower = module.model.vision_tower
    generator = torch.Generator().manual_seed(seed)

    def step_loss(indices: list[int]) -> torch.Tensor:
        batch_targets = {k: v[indices] for k, v in targets.items()}
        batch, batch_targets = augment(pixels[indices].float(), batch_targets, grid, generator)
        return fact_loss(heads(image_tokens(module, batch)), batch_targets)

    params = list(tower.parameters()) + list(heads.parameters())
    for p in params:
        p.requires_grad_(True)
    tower.train()
    result = train(step_loss, [{"params": params, "lr": config.lr}], count=len(facts),
                   batch_size=config.batch_size, steps=config.steps, seed=seed,
                   max_grad_norm=max_grad_norm, weight_decay=0.01, progress=progress)
    tower.eval()
    return result, heads


@torch.inference_mode()
def probe_accuracy(module: torch.nn.Module, heads: FactHeads, pixels: torch.Tensor,
                   facts: list[ImageFacts], batch_size: int = 64) -> dict[str, float]:
    """How well the heads read the facts off held-out images (a health check of the tower)."""
    grid = _grid(module, pixels)
    targets = fact_targets(facts, grid)
    parts = [heads(image_tokens(module, pixels[i:i + batch_size].float()))
             for i in range(0, len(pixels), batch_size)]
    predicted = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    result = {}
    for key in ("modality", "organ", "count"):
        known = targets[key] != -100
        if known.any():
            hits = predicted[key].argmax(-1)[known] == targets[key][known]
            result[key] = float(hits.float().mean())
    known = targets["count"] != -100
    if known.any():
        seen = predicted["count"].argmax(-1)[known] > 0
        result["presence"] = float((seen == (targets["count"][known] > 0)).float().mean())
    return result

"""The three phases of the method as parameter choices on one model.

1. alignment: vision tower + projector learn to caption; the language model is frozen.
2. instruction: LoRA on the language model + projector (+ tower) on open-form instructions.
3. vqa: the same parameters on the downstream closed questions, in the evaluation's format.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from mfmaccel.finetune.collate import Collator
from mfmaccel.finetune.config import FinetuneConfig, PhaseConfig
from mfmaccel.finetune.data import PhaseData
from mfmaccel.finetune.features import cached_tower
from mfmaccel.finetune.loop import TrainResult, answer_loss, train
from mfmaccel.models.lora import lora_parameters
from mfmaccel.models.medvlm_parts import projector, tower

PHASES = ("alignment", "instruction", "vqa")


def parameter_groups(module: torch.nn.Module, phase: str, config: PhaseConfig) -> list[dict]:
    """AdamW groups of what `phase` trains; everything else is frozen."""
    for p in module.parameters():
        p.requires_grad_(False)
    groups = [{"name": "projector", "params": list(projector(module).parameters()),
               "lr": config.projector_lr}]
    if config.train_tower:
        groups.append({"name": "tower", "params": list(tower(module).parameters()),
                       "lr": config.tower_lr})
    if phase != "alignment":
        groups.append({"name": "lora", "params": lora_parameters(module), "lr": config.lr})
    for group in groups:
        for p in group["params"]:
            p.requires_grad_(True)
    return [g for g in groups if g["params"]]


def run_phase(
    module: torch.nn.Module, processor, phase: str, *, data: PhaseData, config: FinetuneConfig,
    progress=None, cached: bool = False,
) -> tuple[TrainResult, list[str]]:
    """Train `phase` on `data`; returns the loss curve and the names of what trained. With
    `cached`, `data.pixels` holds the frozen tower's features (see finetune.features)."""
    phase_config: PhaseConfig = getattr(config, phase)
    groups = parameter_groups(module, phase, phase_config)
    collate = Collator(processor, data.pixels)

    def step_loss(indices: list[int]) -> torch.Tensor:
        return answer_loss(module, collate([data.examples[i] for i in indices]))

    module.train()
    if not phase_config.train_tower:
        tower(module).eval()  # a frozen tower keeps its batch-norm statistics too
    seed = config.seed + 1 + PHASES.index(phase)
    with cached_tower(module) if cached else nullcontext():
        result = train(step_loss, groups, count=len(data.examples), batch_size=config.batch_size,
                       steps=phase_config.steps, seed=seed, max_grad_norm=config.max_grad_norm,
                       weight_decay=config.weight_decay, progress=progress)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return result, [g["name"] for g in groups]

"""`FinetuneConfig`: every knob of the three-phase domain adaptation, validated (unknown keys
are errors), with defaults that make the whole recipe fit about 15 minutes on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mfmaccel.errors import UserInputError
from mfmaccel.models.medvlm import PretrainedTower, VisionSize

HYBRID_TOWER = "vit-hybrid"  # medvlm v1's tower, trained from scratch


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WarmupConfig(Strict):
    """Phase 1a: the tower alone learns the caption facts through small throwaway heads (a
    stand-in for the CLIP-style pretraining a real tower would come with; ~30x cheaper per
    image than a step through the language model). 0 steps skips it (e.g. a pretrained base)."""

    steps: int = Field(700, ge=0)  # medvlm-v1's; medvlm on DINOv2 runs none
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)


class PhaseConfig(Strict):
    """One phase through the language model: steps, learning rates, what trains."""

    steps: int = Field(ge=0)
    lr: float = Field(gt=0)  # LoRA (phases 2 and 3)
    projector_lr: float = Field(gt=0)
    tower_lr: float = Field(gt=0)
    train_tower: bool = True


class PhaseSettings(Strict):
    """What the phases do, whatever model they run on (shared with the pipeline stage)."""

    data: str | None = None  # a VQA-RAD / SLAKE-format folder: phase 3 trains on its train split
    benchmark: Literal["medvqa", "medvqa2"] = "medvqa2"  # the offline benchmark trained on
    batch_size: int = Field(8, ge=1)
    lora_rank: int = Field(4, ge=1)
    lora_alpha: float = Field(8.0, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup: WarmupConfig = WarmupConfig(steps=0)  # a pretrained tower needs none
    # The pretrained tower stays frozen (its features are computed once); phase 1 trains the
    # projector, phases 2 and 3 LoRA + projector. medvlm-v1's recipe (phase 1 training its
    # from-scratch tower too) is benchmarks/configs/medvlm-v1.yaml; docs/finetune.md compares.
    alignment: PhaseConfig = PhaseConfig(steps=20, lr=1e-3, projector_lr=3e-3, tower_lr=2e-4,
                                         train_tower=False)
    instruction: PhaseConfig = PhaseConfig(steps=20, lr=1e-3, projector_lr=1e-3, tower_lr=2e-4,
                                           train_tower=False)
    vqa: PhaseConfig = PhaseConfig(steps=200, lr=2e-3, projector_lr=1e-3, tower_lr=2e-4,
                                   train_tower=False)
    train_per_source: int | None = Field(None, ge=1)  # medvqa train size (None: ~2000 samples)
    train_limit: int | None = Field(None, ge=1)  # medvqa2: its first N train (and val) samples
    val_samples: int = Field(40, ge=1)  # fixed val subset for the per-phase accuracy (8 per type)
    val_before: bool = True  # also measure val accuracy before phase 1

    @model_validator(mode="after")
    def _warmup_is_for_medvqa(self) -> PhaseSettings:
        if self.benchmark == "medvqa2" and self.warmup.steps:
            raise ValueError("the tower warm-up learns medvqa's painted lesions; set "
                             "warmup.steps: 0 with benchmark medvqa2")
        return self

    @property
    def tower_frozen(self) -> bool:
        """No phase trains the tower: its features can be computed once (finetune.features)."""
        phases = (self.alignment, self.instruction, self.vqa)
        return self.warmup.steps == 0 and not any(p.train_tower and p.steps for p in phases)


class FinetuneConfig(PhaseSettings):
    """The whole recipe of `finetune_medvlm`: the phases plus the seed and the base model."""

    seed: int = Field(0, ge=0)
    base: str | None = None  # a user's HF LLaVA folder (any `load_model` spec of a VLM)
    tower: Literal["vit-hybrid", "dinov2-s14"] = "dinov2-s14"
    # medvlm's input side in pixels, a multiple of the tower's patch (32 for the hybrid's stem,
    # 14 for DINOv2): fewer image tokens make every step through the language model cheaper
    image_size: int = Field(PretrainedTower.image_size, ge=28)

    @model_validator(mode="after")
    def _image_size_fits_the_tower(self) -> FinetuneConfig:
        patch = self.vision().patch_size
        if self.image_size % patch:
            raise ValueError(f"image_size {self.image_size} is not a multiple of the "
                             f"{self.tower} tower's {patch}-pixel patch")
        return self

    def vision(self) -> VisionSize | PretrainedTower:
        """The tower `finetune_medvlm` builds medvlm with."""
        if self.tower == HYBRID_TOWER:
            return VisionSize(image_size=self.image_size)
        return PretrainedTower(tower=self.tower, image_size=self.image_size)


def load_config(path: str | Path | None, **overrides) -> FinetuneConfig:
    """The config of a YAML file (or the defaults), with non-None `overrides` applied."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserInputError(f"finetune config {path} does not exist; check the path")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise UserInputError(f"{path}: not valid YAML ({err}); fix the file") from None
        if not isinstance(raw, dict):
            raise UserInputError(f"{path}: expected a mapping of finetune settings")
    raw.update({key: value for key, value in overrides.items() if value is not None})
    return validate_config(raw, str(path or "finetune config"))


def validate_config(raw: dict, where: str = "finetune config") -> FinetuneConfig:
    try:
        return FinetuneConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            valid = ", ".join(FinetuneConfig.model_fields)
            raise UserInputError(f"{where}: unknown key '{key}'; valid: {valid}") from None
        message = first["msg"].removeprefix("Value error, ")
        raise UserInputError(f"{where}: {key + ': ' if key else ''}{message}") from None

"""Small, fast settings: the tiny medvlm (tiny Llama instead of SmolLM2, 32x32 tower) and
tiny-llava, a handful of benchmark images, a few steps per phase."""

from __future__ import annotations

import pytest

from mfmaccel.finetune.config import FinetuneConfig, PhaseConfig, WarmupConfig
from mfmaccel.models.medvlm import build_medvlm

FAST_PHASE = {"steps": 2, "lr": 1e-2, "projector_lr": 1e-2, "tower_lr": 1e-2}


def fast_config(**overrides) -> FinetuneConfig:
    settings = {
        "benchmark": "medvqa", "tower": "vit-hybrid", "image_size": 160,
        "train_per_source": 2, "batch_size": 2, "val_samples": 3,
        "warmup": WarmupConfig(steps=2, batch_size=4),
        "alignment": PhaseConfig(**FAST_PHASE), "instruction": PhaseConfig(**FAST_PHASE),
        "vqa": PhaseConfig(**FAST_PHASE),
    }
    return FinetuneConfig(**{**settings, **overrides})


@pytest.fixture
def tiny_medvlm():
    return build_medvlm(seed=0, tiny=True)

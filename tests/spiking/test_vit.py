"""A spiking DINOv2 tower (medvlm's tower kind) equals its integer program bit for bit once
no neuron fires, on real medical images through medvlm's own processor (tiny tower)."""

from __future__ import annotations

import pytest
import torch

from mfmaccel.data.medvqa import load_medvqa
from mfmaccel.errors import UserInputError
from mfmaccel.finetune.data import pixel_tensor
from mfmaccel.hw.intexec.dinov2 import convert_dinov2
from mfmaccel.models.medvlm import TINY_PRETRAINED, build_medvlm
from mfmaccel.spiking.vit import SpikingDinov2


@pytest.fixture(scope="module")
def tower_and_images():
    model = build_medvlm(seed=0, tiny=True, vision=TINY_PRETRAINED)
    samples = load_medvqa("train", per_source=2)
    images = pixel_tensor(model.processor, [s.image for s in samples])
    return model.module.model.vision_tower, images


@pytest.mark.parametrize("levels", [8, None])
@torch.inference_mode()
def test_spiking_dinov2_equals_its_integer_program_once_settled(tower_and_images, levels):
    tower, images = tower_and_images
    program = convert_dinov2(tower, [images], per_token=False)
    expected = program.hidden_states(images[:2])[-1][0]
    hidden, run = SpikingDinov2(program, levels).run(images[:2])
    assert run.settled_at == run.steps
    assert torch.equal(hidden, expected)
    assert run.macs > 0 and sum(run.accumulates) > 0


@torch.inference_mode()
def test_a_per_token_tower_is_refused(tower_and_images):
    tower, images = tower_and_images
    with pytest.raises(UserInputError, match="per-token scales"):
        SpikingDinov2(convert_dinov2(tower, [images]))

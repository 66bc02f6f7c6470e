"""A spiking tower stopped after T steps as a VLM's vision tower (tiny medvlm, real images)."""

from __future__ import annotations

import pytest
import torch

from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.vqa import vqa_accuracy
from mfmaccel.finetune.data import pixel_tensor, val_subset
from mfmaccel.hw.intexec.dinov2 import convert_dinov2
from mfmaccel.hw.intexec.quality import (
    benchmark_splits,
    calibration_pixels,
    feature_cosine,
    vision_agreement,
    with_tower,
)
from mfmaccel.hw.intexec.vit import IntegerTower
from mfmaccel.models.medvlm import TINY_PRETRAINED, build_medvlm
from mfmaccel.spiking.stopped import StoppedRuns, StoppedTower


@pytest.fixture(scope="module")
def vlm():
    return build_medvlm(seed=0, tiny=True, vision=TINY_PRETRAINED)


@pytest.fixture(scope="module")
def setting(vlm):
    """The integer program, 4 test questions and their images (the benchmark loads once)."""
    with torch.inference_mode():
        program = convert_dinov2(vlm.module.model.vision_tower, [calibration_pixels(vlm, 4)],
                                 per_token=False)
    _, _, test = benchmark_splits(vlm, 4)
    questions = val_subset(test, 4)
    return program, questions, pixel_tensor(vlm.processor, [s.image for s in questions])


@torch.inference_mode()
def test_a_settled_tower_answers_as_the_integer_tower_and_an_early_one_differs(
        vlm, setting) -> None:
    program, questions, pixels = setting
    runs = StoppedRuns(program, levels=16, steps=[1, 500])
    runs.fill(pixels, batch_size=3)
    assert all(s is not None for s in runs.settled_at) and len(runs.settled_at) == 2
    assert runs.spike_rate > 0
    integer = IntegerTower(program, 14)
    settled, first = StoppedTower(runs, 500), StoppedTower(runs, 1)
    expected = integer(pixels).hidden_states[-1]
    assert torch.equal(settled(pixels).hidden_states[-1], expected)
    assert not torch.equal(first(pixels).last_hidden_state, expected)
    reference = vqa_accuracy(vlm, questions)
    found = vision_agreement(vlm, questions=4, calibration=4, per_token=False,
                             stand_in=settled, reference=reference)
    assert found.integer_accuracy == vqa_accuracy(with_tower(vlm, integer), questions).accuracy
    tower = vlm.module.model.vision_tower
    assert found.feature_cosine == pytest.approx(feature_cosine(tower, integer, pixels))


def test_unknown_images_and_step_counts_are_refused(setting) -> None:
    program, _, pixels = setting
    runs = StoppedRuns(program, levels=None, steps=[2])
    runs.fill(pixels[:1])
    assert runs.hidden(pixels[:1], 2).shape[0] == 1
    with pytest.raises(UserInputError, match="has not run; fill it first"):
        runs.hidden(pixels[1:2], 2)
    with pytest.raises(UserInputError, match="were not kept"):
        runs.hidden(pixels[:1], 3)
    with pytest.raises(UserInputError, match="at least 1"):
        StoppedRuns(program, levels=None, steps=[0])

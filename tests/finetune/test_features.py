"""A frozen tower's cached features give the loss and gradients its pixels give."""

from __future__ import annotations

import torch
from PIL import Image

from mfmaccel.finetune.collate import Collator, Example
from mfmaccel.finetune.features import cached_tower, tower_features
from mfmaccel.finetune.loop import answer_loss
from mfmaccel.models.medvlm import TINY_PRETRAINED, build_medvlm
from mfmaccel.models.medvlm_parts import projector, tower


def test_cached_features_give_the_same_loss_and_gradients() -> None:
    model = build_medvlm(seed=0, tiny=True, vision=TINY_PRETRAINED)
    module, processor = model.module, model.processor
    images = [Image.new("RGB", (40, 30), color) for color in ((200, 10, 10), (10, 200, 90))]
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    examples = [Example(0, "Is there a tumour?", "yes"), Example(1, "Which organ?", "head")]

    def loss_and_grad(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight = projector(module).linear_1.weight
        weight.grad = None
        weight.requires_grad_(True)
        loss = answer_loss(module, Collator(processor, rows)(examples))
        loss.backward()
        return loss.detach(), weight.grad.clone()

    loss, grad = loss_and_grad(pixels)
    features = tower_features(module, pixels)
    assert features.shape == (2, 1 + TINY_PRETRAINED.image_tokens, 32)
    real_tower = tower(module)
    with cached_tower(module):
        assert tower(module) is not real_tower
        cached_loss, cached_grad = loss_and_grad(features)
    assert tower(module) is real_tower
    torch.testing.assert_close(cached_loss, loss)
    torch.testing.assert_close(cached_grad, grad)

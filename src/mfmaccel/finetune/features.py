"""A frozen tower runs once per image, not once per step.

When no phase trains the vision tower, its output for an image never changes, so we compute the
hidden state LLaVA reads (`vision_feature_layer`) for every training image once and, while a phase
trains, put a stand-in where the tower was: it hands back the cached features it is given in
place of pixels. The rest of LLaVA (feature selection, projector, language model) runs as usual,
so the loss is the one the real tower would give. A pretrained ViT-S at 112 pixels costs about as
much per image as a step's language-model work on a short answer; cached, it costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers.modeling_outputs import BaseModelOutput

from mfmaccel.models.medvlm_parts import tower

CHUNK = 32  # images per tower pass while caching


def feature_layer(module: torch.nn.Module) -> int | None:
    """The tower layer LLaVA reads, or None when it reads several (not cached then)."""
    layer = module.config.vision_feature_layer
    return layer if isinstance(layer, int) else None


@torch.no_grad()
def tower_features(module: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """(images, tokens, width): the tower's hidden state at LLaVA's feature layer per image."""
    layer, vision = feature_layer(module), tower(module)
    was_training = vision.training
    vision.eval()
    parts = [vision(pixels[i:i + CHUNK].float(), output_hidden_states=True).hidden_states[layer]
             for i in range(0, len(pixels), CHUNK)]
    vision.train(was_training)
    return torch.cat(parts)


class CachedTower(torch.nn.Module):
    """Stands in for a frozen tower: its "pixel values" are that tower's cached hidden states,
    returned at every layer index so whatever `vision_feature_layer` reads finds them."""

    def __init__(self, layers: int) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, features: torch.Tensor, **kwargs) -> BaseModelOutput:
        return BaseModelOutput(last_hidden_state=features,
                               hidden_states=(features,) * (self.layers + 1))


@contextmanager
def cached_tower(module: torch.nn.Module) -> Iterator[None]:
    """Within the block, `module` reads cached features where it read pixels."""
    model = module.model
    real = model.vision_tower
    model.vision_tower = CachedTower(real.config.num_hidden_layers)
    try:
        yield
    finally:
        model.vision_tower = real

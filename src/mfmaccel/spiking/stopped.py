"""A spiking DINOv2 tower stopped after T steps, as a drop-in LLaVA vision tower, so a VLM's
answers can be scored with rate-coded features that have not settled yet.

A spiking run costs a step's worth of spike-fed GEMMs per step, so each image is run once, up to
the largest step count wanted (or until it settles), and its hidden states are kept after each
step count (`StoppedRuns.fill`); `StoppedTower(runs, steps)` then hands the projector the
states kept for the pixel values it is given. The states are dequantized as the integer tower's
are (`hw.intexec.vit.IntegerTower`): LLaVA reads `hidden_states[-1]`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intexec.dinov2 import IntDinov2
from mfmaccel.spiking.layers import kept_states
from mfmaccel.spiking.vit import SpikingDinov2


def _key(pixels: torch.Tensor) -> bytes:
    """One image's pixel values as a lookup key (the tower is called with the same tensors)."""
    return pixels.float().contiguous().numpy().tobytes()


class StoppedRuns:
    """Each image's last hidden states (int16) after each of `steps`, from one spiking run per
    batch; a run that settles earlier keeps its settled states for the later counts."""

    def __init__(self, program: IntDinov2, *, levels: int | None, steps: Sequence[int]) -> None:
        if not steps or min(steps) < 1:
            raise UserInputError("every step count must be at least 1, e.g. 32,64,128")
        self.spiking = SpikingDinov2(program, levels)
        self.scale = program.layers[-1].scales["out"]
        self.steps = sorted(set(steps))
        self.kept: dict[bytes, dict[int, torch.Tensor]] = {}
        self.settled_at: list[int | None] = []  # per batch run
        self.fired = self.neuron_steps = self.accumulates = 0

    @torch.inference_mode()
    def fill(self, pixels: torch.Tensor, *, batch_size: int = 4) -> None:
        """Run the images of `pixels` (N, C, H, W) not kept yet, `batch_size` at a time."""
        missing = [i for i in range(len(pixels)) if _key(pixels[i]) not in self.kept]
        for start in range(0, len(missing), batch_size):
            self._run(pixels[missing[start:start + batch_size]])

    def _run(self, batch: torch.Tensor) -> None:
        kept = kept_states(self.spiking.steps(batch), self.steps)
        self.fired += kept.fired
        self.neuron_steps += kept.neuron_steps
        self.accumulates += kept.accumulates
        self.settled_at.append(kept.settled_at)
        for i, image in enumerate(batch):
            self.kept[_key(image)] = {t: h[i] for t, h in kept.states.items()}

    def hidden(self, pixels: torch.Tensor, steps: int) -> torch.Tensor:
        """The dequantized last hidden states of `pixels` after `steps`, all run before."""
        if steps not in self.steps:
            raise UserInputError(f"{steps} steps were not kept; choose one of {self.steps}")
        try:
            rows = [self.kept[_key(image)][steps] for image in pixels]
        except KeyError:
            raise UserInputError("an image the spiking tower has not run; fill it first") \
                from None
        return (torch.stack(rows).double() * self.scale).float()

    @property
    def spike_rate(self) -> float:
        """Unit spikes per neuron per step, over every run so far."""
        return self.fired / max(1, self.neuron_steps)


class StoppedTower(nn.Module):
    """Drop-in for a LLaVA `vision_tower`: the spiking tower's states after `steps`."""

    def __init__(self, runs: StoppedRuns, steps: int) -> None:
        super().__init__()
        self.runs, self.steps = runs, steps

    def forward(self, pixel_values: torch.Tensor, **_kwargs) -> BaseModelOutputWithPooling:
        last = self.runs.hidden(pixel_values, self.steps)
        return BaseModelOutputWithPooling(last_hidden_state=last, hidden_states=(last,))


__all__ = ["StoppedRuns", "StoppedTower"]

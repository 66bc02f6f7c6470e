"""A DINOv2 vision tower's integer program (`hw.intexec.dinov2`, static scales; medvlm's
tower) as a spiking program, step by step, built like the BERT one (`bert`).

The quantized pixels enter as spikes (follower neurons: each pixel's int8 value, at most
`levels` a step), so the patch embedding is a spike-fed GEMM; its int16 output, the class
token and position table, the residual stream, both LayerNorms' statistics, the MLP's first
requantization and GELU are spike-equivalent operators; the tensors a product reads spike
(the LayerNorms' int8 outputs, q, k, v, the probabilities, the context, the GELU's
requantized output). Once no neuron fires, every layer's int16 output equals the integer
program's, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.nn import functional

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intexec.dinov2 import IntDinov2
from mfmaccel.hw.intexec.linear import INT16
from mfmaccel.hw.intexec.vit import IntViTLayer
from mfmaccel.hw.intops import residual_add
from mfmaccel.hw.intops.datapath import requantize
from mfmaccel.spiking.layers import (
    Gemm,
    SpikingBlock,
    SpikingRun,
    Step,
    attention_macs,
    check_spikable,
    norm_value,
    population_sizes,
    run_until_settled,
    unit_spikes,
)
from mfmaccel.spiking.neuron import Neuron


class _Layer(SpikingBlock):
    """One pre-norm encoder layer: each LayerNorm reads the residual stream so far."""

    def __init__(self, layer: IntViTLayer, levels: int | None) -> None:
        super().__init__(layer, levels, (layer.norm1, layer.norm2))

    def step(self, h: torch.Tensor, mask: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        """One step: the residual stream so far in; this layer's out, every population's
        spikes and the ACs."""
        layer, n, s = self.layer, self.neurons, self.layer.scales
        norm1 = n["norm1"].step(norm_value(layer.norm1, layer.norm1.normalised(h)))
        spikes, attended, acs = self.attend(norm1, mask)
        spikes["norm1"] = norm1
        h1 = residual_add(attended, s["res1"], h, s["in"], s["h1"], out=INT16)
        spikes["norm2"] = n["norm2"].step(norm_value(layer.norm2, layer.norm2.normalised(h1)))
        spikes["gelu"], out, cost = self.mlp(spikes["norm2"])
        return (residual_add(out, s["res2"], h1, s["h1"], s["out"], out=INT16), spikes,
                acs + cost)


class SpikingDinov2:
    """Runs `program` (built with static scales: `convert_dinov2(..., per_token=False)`) as a
    spiking network; `levels`: unit spikes a neuron may fire in one step (None: any)."""

    def __init__(self, program: IntDinov2, levels: int | None = 1) -> None:
        check_spikable(program.layers, levels)
        self.program = program
        self.levels = levels

    def steps(self, pixel_values: torch.Tensor) -> Iterator[Step]:
        """Step after step, for ever: the last layer's int16 output so far, each population's
        unit spikes and the ACs of that step."""
        program = self.program
        patches = program.patches
        pixels = program.quantize_pixels(pixel_values)
        unfolded = functional.unfold(pixels.double(), patches.kernel, padding=patches.padding,
                                     stride=patches.stride).long().transpose(1, 2)
        inputs = Neuron(None, program.pixels, self.levels)
        embed = Gemm(patches.linear)
        layers = [_Layer(layer, self.levels) for layer in program.layers]
        cls_position = program.cls_position
        mask = torch.ones(unfolded.shape[0], unfolded.shape[1] + 1, dtype=torch.long)
        sizes: dict[str, int] = {}
        while True:
            spikes = inputs.step(unfolded)
            fired = {"pixels": int(spikes.abs().sum())}
            acc, acs = embed.step(spikes)
            tokens = requantize(acc, patches.linear.requant, patches.linear.out)
            cls = cls_position[:1].expand(len(tokens), 1, -1)
            h = INT16.clamp(torch.cat([cls, tokens + cls_position[None, 1:]], dim=1))
            for index, layer in enumerate(layers):
                h, populations, cost = layer.step(h, mask)
                acs += cost
                fired.update(unit_spikes(populations, f"{index}."))
            sizes = sizes or population_sizes("pixels", inputs, layers)
            yield Step(h, fired, acs, sizes)

    def run(self, pixel_values: torch.Tensor, *, steps: int | None = None,
            max_steps: int = 4096) -> tuple[torch.Tensor, SpikingRun]:
        """The last layer's int16 output after `steps` steps (None: until no neuron fires, at
        most `max_steps`), and what the run did."""
        if steps is not None and steps < 1:
            raise UserInputError(f"--steps must be at least 1, got {steps}")
        return run_until_settled(self.steps(pixel_values), limit=steps or max_steps,
                                 macs=tower_macs(self.program, len(pixel_values)))


def tower_macs(program: IntDinov2, images: int) -> int:
    """Multiply-accumulates of the integer program on `images` images (the patch GEMM, every
    layer's GEMMs and both attention products)."""
    length = program.cls_position.shape[0]
    patches = (length - 1) * images * program.patches.linear.weight.numel()
    return patches + sum(attention_macs(layer.attention, images, length) + images * length * sum(
        lin.weight.numel() for lin in (layer.attention_out, layer.intermediate, layer.output))
        for layer in program.layers)


__all__ = ["SpikingDinov2", "tower_macs"]

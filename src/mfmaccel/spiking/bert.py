"""A BERT-family encoder's integer program (`hw.intexec.bert`, static scales) as a spiking
program, step by step (SpikeZIP-TF's construction on our integers).

Every int8 (and uint8) tensor that a product reads becomes a population of `Neuron`s whose
spikes stand for it: the q, k, v projections, the softmax's probabilities, the attention
context, both LayerNorms' int8 outputs and the GELU's requantized output (`layers`).
Everything else (the int16 residual stream, the softmax, the LayerNorms' statistics, the
intermediate projection's requantization and GELU) is a spike-equivalent operator: the integer
function of its inputs so far, recomputed each step, its change fed to the next neurons.

Neurons fire within the step their input changes, so a spike crosses the whole network in one
step. When a step fires no spike anywhere, nothing can change again: every neuron's count is
then the integer program's value (see `neuron`), and the final int16 hidden states are the
integer program's, bit for bit. Stopping earlier (`steps`) reads the counts so far: the
rate-coded approximation, whose error shrinks as the steps grow.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intexec.bert import IntBert, IntBertLayer
from mfmaccel.hw.intexec.linear import INT16
from mfmaccel.hw.intops import residual_add
from mfmaccel.spiking.layers import (
    SpikingBlock,
    SpikingRun,
    Step,
    attention_macs,
    check_spikable,
    norm_neuron,
    norm_value,
    population_sizes,
    run_until_settled,
    unit_spikes,
)


class _Layer(SpikingBlock):
    """One post-norm encoder layer: the residual added before each LayerNorm."""

    def __init__(self, layer: IntBertLayer, levels: int | None) -> None:
        super().__init__(layer, levels, (layer.norm1.to_gemm, layer.norm2.to_gemm))

    def step(self, spikes_in: torch.Tensor, h16: torch.Tensor, mask: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], int]:
        """One step: this layer's input spikes and residual so far in; its output spikes,
        residual so far, every population's spikes and the ACs out."""
        layer, n, s = self.layer, self.neurons, self.layer.scales
        spikes, attended, acs = self.attend(spikes_in, mask)
        residual = residual_add(attended, s["res1"], h16, s["in16"], s["res1"], out=INT16)
        normalised = layer.norm1.to_gemm.normalised(residual)
        spikes["norm1"] = n["norm1"].step(norm_value(layer.norm1.to_gemm, normalised))
        g16 = layer.norm1.to_residual.affine(normalised)
        spikes["gelu"], out, cost = self.mlp(spikes["norm1"])
        residual = residual_add(out, s["res2"], g16, s["h1_16"], s["res2"], out=INT16)
        normalised = layer.norm2.to_gemm.normalised(residual)
        spikes["norm2"] = n["norm2"].step(norm_value(layer.norm2.to_gemm, normalised))
        return (spikes["norm2"], layer.norm2.to_residual.affine(normalised), spikes,
                acs + cost)


class SpikingBert:
    """Runs `program` (built with static scales: `convert_bert(..., per_token=False)`) as a
    spiking network; `levels`: unit spikes a neuron may fire in one step (None: any)."""

    def __init__(self, program: IntBert, levels: int | None = 1) -> None:
        check_spikable(program.layers, levels)
        self.program = program
        self.levels = levels

    def steps(self, input_ids: torch.Tensor, mask: torch.Tensor) -> Iterator[Step]:
        """Step after step, for ever: the int16 hidden states so far, each population's unit
        spikes and the ACs of that step."""
        program = self.program
        positions = torch.arange(input_ids.shape[1])
        summed = (program.tables["word"][input_ids] + program.tables["position"][positions]
                  + program.tables["token_type"][0])
        normalised = program.embed_norm.to_gemm.normalised(summed)
        embed_input = norm_value(program.embed_norm.to_gemm, normalised)
        embed = norm_neuron(program.embed_norm.to_gemm, self.levels)
        h16_in = program.embed_norm.to_residual.affine(normalised)
        layers = [_Layer(layer, self.levels) for layer in program.layers]
        sizes: dict[str, int] = {}
        while True:
            spikes = embed.step(embed_input)
            fired = {"embed": int(spikes.abs().sum())}
            h16, acs = h16_in, 0
            for index, layer in enumerate(layers):
                spikes, h16, populations, cost = layer.step(spikes, h16, mask)
                acs += cost
                fired.update(unit_spikes(populations, f"{index}."))
            sizes = sizes or population_sizes("embed", embed, layers)
            yield Step(h16, fired, acs, sizes)

    def run(self, input_ids: torch.Tensor, mask: torch.Tensor, *, steps: int | None = None,
            max_steps: int = 4096) -> tuple[torch.Tensor, SpikingRun]:
        """The final int16 hidden states after `steps` steps (None: until no neuron fires,
        at most `max_steps`), and what the run did."""
        if steps is not None and steps < 1:
            raise UserInputError(f"--steps must be at least 1, got {steps}")
        return run_until_settled(self.steps(input_ids, mask), limit=steps or max_steps,
                                 macs=program_macs(self.program, input_ids))


def program_macs(program: IntBert, input_ids: torch.Tensor) -> int:
    """Multiply-accumulates of the integer program on `input_ids` (GEMMs and both attention
    products): what the spiking program's ACs replace."""
    batch, length = input_ids.shape
    return sum(attention_macs(layer.attention, batch, length) + batch * length * sum(
        lin.weight.numel() for lin in (layer.attention_out, layer.intermediate, layer.output))
        for layer in program.layers)


__all__ = ["SpikingBert", "SpikingRun", "Step", "program_macs"]

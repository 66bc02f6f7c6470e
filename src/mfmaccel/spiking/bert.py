"""A BERT-family encoder's integer program (`hw.intexec.bert`, static scales) as a spiking
program, step by step (SpikeZIP-TF's construction on our integers).

Every int8 (and uint8) tensor that a product reads becomes a population of `Neuron`s whose
spikes stand for it: the q, k, v projections, the softmax's probabilities, the attention
context, both LayerNorms' int8 outputs and the GELU's requantized output. A GEMM fed by spikes
only accumulates: each unit spike adds a weight column (an AC, not a MAC). The attention's two
products grow by the new spikes of either operand against the other's count so far.
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
from dataclasses import dataclass, field

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intexec.bert import IntBert, IntBertLayer
from mfmaccel.hw.intexec.linear import INT16, MASKED, IntLinear
from mfmaccel.hw.intops import INT8, exact_matmul, i_softmax, residual_add, rounding_shift
from mfmaccel.hw.intops.activations import PROBABILITY_BITS
from mfmaccel.hw.intops.datapath import IntRange, requantize
from mfmaccel.records import Record
from mfmaccel.spiking.neuron import Neuron

PROBABILITIES = IntRange(PROBABILITY_BITS, signed=False)


@dataclass
class SpikingRun(Record):
    """What one spiking run did, step by step."""

    steps: int  # steps run
    settled_at: int | None  # the first step that fired no spike (None: still firing)
    spikes: dict[str, list[int]]  # population -> unit spikes per step
    neurons: dict[str, int]  # population -> neurons
    accumulates: list[int]  # ACs per step (one per unit spike per weight it meets)
    macs: int  # the integer program's multiply-accumulates for the same input
    extra: dict = field(default_factory=dict)

    def spike_rate(self, population: str | None = None) -> float:
        """Unit spikes per neuron per step (all populations when None)."""
        names = [population] if population else list(self.spikes)
        fired = sum(sum(self.spikes[n]) for n in names)
        return fired / max(1, sum(self.neurons[n] for n in names) * self.steps)


@dataclass
class Step:
    """One step of a spiking run."""

    hidden: torch.Tensor  # the final int16 hidden states so far
    fired: dict[str, int]  # population -> unit spikes this step
    accumulates: int  # ACs this step
    neurons: dict[str, int]  # population -> neurons

    @property
    def silent(self) -> bool:
        """No neuron fired: nothing can change any more (the run has settled)."""
        return not any(self.fired.values())


class _Gemm:
    """An int8 GEMM fed by spikes: an int32 accumulator that starts at the bias."""

    def __init__(self, linear: IntLinear) -> None:
        self.linear = linear
        self.acc: torch.Tensor | None = None

    def step(self, spikes: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The accumulator after this step's spikes, and the ACs they cost."""
        w = self.linear.weight
        if self.acc is None:
            shape = (*spikes.shape[:-1], w.shape[0])
            bias = self.linear.bias if self.linear.bias is not None else torch.zeros(w.shape[0])
            self.acc = bias.long().expand(shape).clone()
        flat = spikes.reshape(-1, spikes.shape[-1])
        self.acc += exact_matmul(flat, w.T).view(self.acc.shape)
        return self.acc, int(spikes.abs().sum()) * w.shape[0]


class _Layer:
    """One encoder layer's neurons and accumulators."""

    def __init__(self, layer: IntBertLayer, levels: int | None) -> None:
        self.layer = layer
        attention = layer.attention
        self.gemms = {name: _Gemm(lin) for name, lin in (
            ("q", attention.query), ("k", attention.key), ("v", attention.value),
            ("attention_out", layer.attention_out), ("intermediate", layer.intermediate),
            ("output", layer.output))}
        self.neurons = {
            "q": Neuron(attention.query.requant, INT8, levels),
            "k": Neuron(attention.key.requant, INT8, levels),
            "v": Neuron(attention.value.requant, INT8, levels),
            "probs": Neuron(None, PROBABILITIES, levels),
            "context": Neuron(attention.context, INT8, levels),
            "norm1": Neuron(layer.norm1.to_gemm.requant, layer.norm1.to_gemm.out, levels),
            "gelu": Neuron(layer.gelu_out, INT8, levels),
            "norm2": Neuron(layer.norm2.to_gemm.requant, layer.norm2.to_gemm.out, levels),
        }

    def step(self, spikes_in: torch.Tensor, h16: torch.Tensor, mask: torch.Tensor,
             fired: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One step: this layer's input spikes and residual so far in; its output spikes,
        residual so far and ACs out. `fired` collects each population's unit spikes."""
        layer, n, acs = self.layer, self.neurons, 0
        spikes = {}
        for name in ("q", "k", "v"):
            acc, cost = self.gemms[name].step(spikes_in)
            spikes[name], acs = n[name].step(acc), acs + cost
        heads = layer.attention.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)

        q, k, v = (split(n[name].count) for name in ("q", "k", "v"))
        length, width = q.shape[2], q.shape[3]
        # new q spikes meet every k so far, new k spikes every q so far
        acs += (int(spikes["q"].abs().sum()) + int(spikes["k"].abs().sum())) * length
        scores = exact_matmul(q, k.transpose(-1, -2))
        if layer.attention.coarsen is not None:
            scores = rounding_shift(scores * layer.attention.coarsen.m,
                                    layer.attention.coarsen.shift)
        scores = scores.masked_fill(~mask[:, None, None, :].bool(), MASKED)
        spikes["probs"] = n["probs"].step(i_softmax(scores, layer.attention.exp,
                                                    PROBABILITY_BITS))
        acs += int(spikes["probs"].abs().sum()) * width + int(spikes["v"].abs().sum()) * length
        context = exact_matmul(n["probs"].count, v).transpose(1, 2).reshape(
            q.shape[0], length, -1)
        spikes["context"] = n["context"].step(context)
        attended, cost = self.gemms["attention_out"].step(spikes["context"])
        acs += cost
        s = layer.scales
        residual = residual_add(requantize(attended, layer.attention_out.requant, INT16),
                                s["res1"], h16, s["in16"], s["res1"], out=INT16)
        normalised = layer.norm1.to_gemm.normalised(residual)
        spikes["norm1"] = n["norm1"].step(_affine(layer.norm1.to_gemm, normalised))
        g16 = layer.norm1.to_residual.affine(normalised)
        acc, cost = self.gemms["intermediate"].step(spikes["norm1"])
        acs += cost
        ff = requantize(acc, layer.intermediate.requant, layer.intermediate.out)
        spikes["gelu"] = n["gelu"].step(layer.gelu(ff))
        out, cost = self.gemms["output"].step(spikes["gelu"])
        acs += cost
        residual = residual_add(requantize(out, layer.output.requant, INT16), s["res2"], g16,
                                s["h1_16"], s["res2"], out=INT16)
        normalised = layer.norm2.to_gemm.normalised(residual)
        spikes["norm2"] = n["norm2"].step(_affine(layer.norm2.to_gemm, normalised))
        for name, fired_now in spikes.items():
            fired[name] = fired.get(name, 0) + int(fired_now.abs().sum())
        return spikes["norm2"], layer.norm2.to_residual.affine(normalised), acs


def _affine(norm, normalised: torch.Tensor) -> torch.Tensor:
    """A LayerNorm's int32 value before its requantization (what its neurons integrate)."""
    return normalised * norm.gamma + norm.beta


class SpikingBert:
    """Runs `program` (built with static scales: `convert_bert(..., per_token=False)`) as a
    spiking network; `levels`: unit spikes a neuron may fire in one step (None: any)."""

    def __init__(self, program: IntBert, levels: int | None = 1) -> None:
        if any(layer.per_token for layer in program.layers):
            raise UserInputError("per-token scales choose each token's scale from all of its "
                                 "values at once, which spikes cannot; convert with static "
                                 "scales (per_token=False)")
        if levels is not None and levels < 1:
            raise UserInputError(f"--levels must be at least 1, got {levels}")
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
        embed_input = _affine(program.embed_norm.to_gemm, normalised)
        embed = Neuron(program.embed_norm.to_gemm.requant, program.embed_norm.to_gemm.out,
                       self.levels)
        h16_in = program.embed_norm.to_residual.affine(normalised)
        layers = [_Layer(layer, self.levels) for layer in program.layers]
        sizes: dict[str, int] = {}
        while True:
            spikes = embed.step(embed_input)
            fired = {"embed": int(spikes.abs().sum())}
            h16, acs = h16_in, 0
            for index, layer in enumerate(layers):
                counts: dict[str, int] = {}
                spikes, h16, cost = layer.step(spikes, h16, mask, counts)
                acs += cost
                fired.update({f"{index}.{k}": v for k, v in counts.items()})
            if not sizes:
                sizes["embed"] = embed.count.numel()
                for index, layer in enumerate(layers):
                    sizes.update({f"{index}.{k}": nrn.count.numel()
                                  for k, nrn in layer.neurons.items()})
            yield Step(h16, fired, acs, sizes)

    def run(self, input_ids: torch.Tensor, mask: torch.Tensor, *, steps: int | None = None,
            max_steps: int = 4096) -> tuple[torch.Tensor, SpikingRun]:
        """The final int16 hidden states after `steps` steps (None: until no neuron fires,
        at most `max_steps`), and what the run did."""
        if steps is not None and steps < 1:
            raise UserInputError(f"--steps must be at least 1, got {steps}")
        fired: list[dict[str, int]] = []
        accumulates: list[int] = []
        settled = None
        for step in self.steps(input_ids, mask):
            fired.append(step.fired)
            accumulates.append(step.accumulates)
            if step.silent:
                settled = len(fired)
            if settled or len(fired) == (steps or max_steps):
                break
        record = SpikingRun(
            steps=len(fired), settled_at=settled,
            spikes={name: [f[name] for f in fired] for name in step.neurons},
            neurons=step.neurons, accumulates=accumulates,
            macs=program_macs(self.program, input_ids))
        return step.hidden, record


def program_macs(program: IntBert, input_ids: torch.Tensor) -> int:
    """Multiply-accumulates of the integer program on `input_ids` (GEMMs and both attention
    products): what the spiking program's ACs replace."""
    batch, length = input_ids.shape
    total = 0
    for layer in program.layers:
        for linear in (layer.attention.query, layer.attention.key, layer.attention.value,
                       layer.attention_out, layer.intermediate, layer.output):
            total += batch * length * linear.weight.numel()
        total += 2 * batch * length * length * layer.attention.query.weight.shape[0]
    return total


__all__ = ["SpikingBert", "SpikingRun", "Step", "program_macs"]

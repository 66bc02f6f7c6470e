"""What the spiking programs share: spike-fed GEMMs, the spiking attention, the record of a
run, and the loop that steps a program until it settles.

A GEMM fed by spikes only accumulates: each unit spike adds a weight column (an AC, not a
MAC). The attention's two products grow by the new spikes of either operand against the
other's count so far; the softmax between them is a spike-equivalent operator (the integer
softmax of the scores so far), its probabilities re-encoded by neurons.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intexec.bert import IntAttention
from mfmaccel.hw.intexec.linear import INT16, MASKED, IntLinear
from mfmaccel.hw.intops import exact_matmul, i_softmax, rounding_shift
from mfmaccel.hw.intops.datapath import IntRange, requantize
from mfmaccel.hw.intops.norms import ILayerNorm
from mfmaccel.records import Record
from mfmaccel.spiking.neuron import Neuron


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


@dataclass
class KeptStates:
    """The hidden states of one run after each of a few step counts, and what it fired."""

    states: dict[int, torch.Tensor]  # step count -> hidden states (a settled run's for later)
    settled_at: int | None  # the first silent step, None when the last count came first
    fired: int  # unit spikes over the steps run
    neuron_steps: int  # neurons x steps run
    accumulates: int


def kept_states(steps: Iterator[Step], wanted: Sequence[int]) -> KeptStates:
    """Take `steps` up to the largest of `wanted` or until one is silent, keeping the hidden
    states after each count of `wanted` (a run that settles earlier keeps its settled states
    for the later counts)."""
    wanted = sorted(set(wanted))
    kept = KeptStates({}, None, 0, 0, 0)
    for count, step in enumerate(steps, 1):
        kept.fired += sum(step.fired.values())
        kept.neuron_steps += sum(step.neurons.values())
        kept.accumulates += step.accumulates
        done = step.silent or count == wanted[-1]
        for target in wanted:
            if target == count or (done and target > count):
                kept.states[target] = step.hidden
        if done:
            kept.settled_at = count if step.silent else None
            return kept
    return kept


def run_until_settled(steps: Iterator[Step], *, limit: int, macs: int
                      ) -> tuple[torch.Tensor, SpikingRun]:
    """Take `steps` until one is silent or `limit` are taken: the last hidden states and the
    run's record."""
    fired: list[dict[str, int]] = []
    accumulates: list[int] = []
    settled = None
    for step in steps:
        fired.append(step.fired)
        accumulates.append(step.accumulates)
        if step.silent:
            settled = len(fired)
        if settled or len(fired) == limit:
            break
    record = SpikingRun(
        steps=len(fired), settled_at=settled,
        spikes={name: [f[name] for f in fired] for name in step.neurons},
        neurons=step.neurons, accumulates=accumulates, macs=macs)
    return step.hidden, record


def check_spikable(layers: list, levels: int | None) -> None:
    """Refuse a program whose layers choose per-token scales, and fewer than one level."""
    if any(layer.per_token for layer in layers):
        raise UserInputError("per-token scales choose each token's scale from all of its "
                             "values at once, which spikes cannot; convert with static "
                             "scales (per_token=False)")
    if levels is not None and levels < 1:
        raise UserInputError(f"--levels must be at least 1, got {levels}")


def population_sizes(first: str, neuron: Neuron, layers: list) -> dict[str, int]:
    """Neurons per population: the input's (`first`), then each layer's by index."""
    sizes = {first: neuron.count.numel()}
    for index, layer in enumerate(layers):
        sizes.update({f"{index}.{k}": nrn.count.numel() for k, nrn in layer.neurons.items()})
    return sizes


class Gemm:
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


def norm_neuron(norm: ILayerNorm, levels: int | None) -> Neuron:
    """The neurons that re-encode a LayerNorm's output (they integrate its value before the
    requantization: `norm_value`)."""
    return Neuron(norm.requant, norm.out, levels)


def norm_value(norm: ILayerNorm, normalised: torch.Tensor) -> torch.Tensor:
    """A LayerNorm's int32 value before its requantization (what its neurons integrate)."""
    return normalised * norm.gamma + norm.beta


class SpikingAttention:
    """The integer program's attention (`IntAttention`) fed by spikes, up to the context's
    spikes; `signed`: the range of q, k, v and the context (the layer's `ProductInputs`)."""

    def __init__(self, attention: IntAttention, levels: int | None, signed: IntRange) -> None:
        self.attention = attention
        self.gemms = {name: Gemm(getattr(attention, field_name)) for name, field_name in
                      (("q", "query"), ("k", "key"), ("v", "value"))}
        self.neurons = {
            "q": Neuron(attention.query.requant, signed, levels),
            "k": Neuron(attention.key.requant, signed, levels),
            "v": Neuron(attention.value.requant, signed, levels),
            "probs": Neuron(None, IntRange(attention.probability_bits, signed=False), levels),
            "context": Neuron(attention.context, signed, levels),
        }

    def step(self, spikes_in: torch.Tensor, mask: torch.Tensor
             ) -> tuple[dict[str, torch.Tensor], int]:
        """Each population's spikes this step (the context's feed the output projection), and
        the ACs they cost."""
        attention, n, acs, spikes = self.attention, self.neurons, 0, {}
        for name in ("q", "k", "v"):
            acc, cost = self.gemms[name].step(spikes_in)
            spikes[name], acs = n[name].step(acc), acs + cost
        heads = attention.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)

        q, k, v = (split(n[name].count) for name in ("q", "k", "v"))
        length, width = q.shape[2], q.shape[3]
        # new q spikes meet every k so far, new k spikes every q so far
        acs += (int(spikes["q"].abs().sum()) + int(spikes["k"].abs().sum())) * length
        scores = exact_matmul(q, k.transpose(-1, -2))
        if attention.rescale is not None:
            scores = rounding_shift(scores * attention.rescale.m, attention.rescale.shift)
        scores = scores.masked_fill(~mask[:, None, None, :].bool(), MASKED)
        probs = i_softmax(scores, attention.exp, attention.probability_bits)
        spikes["probs"] = n["probs"].step(probs)
        acs += int(spikes["probs"].abs().sum()) * width + int(spikes["v"].abs().sum()) * length
        context = exact_matmul(n["probs"].count, v).transpose(1, 2).reshape(
            q.shape[0], length, -1)
        spikes["context"] = n["context"].step(context)
        return spikes, acs


class SpikingBlock:
    """What both encoder layers (post-norm BERT, pre-norm ViT) run the same way: the attention
    up to its int16 output projection, and the MLP from its input spikes to its int16 output
    (the intermediate projection's requantization and GELU graded, the GELU's requantized
    output spiking). A layer adds its two LayerNorms' neurons (`norm1`, `norm2`)."""

    def __init__(self, layer, levels: int | None, norms: tuple) -> None:
        self.layer = layer
        self.attention = SpikingAttention(layer.attention, levels, layer.inputs.signed)
        self.gemms = {name: Gemm(getattr(layer, name))
                      for name in ("attention_out", "intermediate", "output")}
        self.neurons = {**self.attention.neurons,
                        "norm1": norm_neuron(norms[0], levels),
                        "gelu": Neuron(layer.gelu_out, layer.inputs.signed, levels),
                        "norm2": norm_neuron(norms[1], levels)}

    def attend(self, spikes_in: torch.Tensor, mask: torch.Tensor
               ) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
        """The attention's spikes this step, its int16 output so far, and the ACs."""
        spikes, acs = self.attention.step(spikes_in, mask)
        attended, cost = self.gemms["attention_out"].step(spikes["context"])
        return spikes, requantize(attended, self.layer.attention_out.requant, INT16), acs + cost

    def mlp(self, spikes_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The GELU output's spikes this step, the MLP's int16 output so far, and the ACs."""
        layer = self.layer
        acc, acs = self.gemms["intermediate"].step(spikes_in)
        ff = requantize(acc, layer.intermediate.requant, layer.intermediate.out)
        gelu = self.neurons["gelu"].step(layer.gelu(ff))
        out, cost = self.gemms["output"].step(gelu)
        return gelu, requantize(out, layer.output.requant, INT16), acs + cost


def unit_spikes(spikes: dict[str, torch.Tensor], prefix: str) -> dict[str, int]:
    """Each population's unit spikes this step, named `prefix` + population."""
    return {f"{prefix}{name}": int(now.abs().sum()) for name, now in spikes.items()}


def attention_macs(attention: IntAttention, batch: int, length: int) -> int:
    """Multiply-accumulates of the integer attention: q, k, v and both products."""
    projections = sum(lin.weight.numel() for lin in (attention.query, attention.key,
                                                      attention.value))
    return batch * length * projections + 2 * batch * length * length * \
        attention.query.weight.shape[0]

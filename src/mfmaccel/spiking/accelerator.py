"""A spiking run as the spiking accelerator variant sees it: the spike-fed GEMMs of a spiking
encoder (`bert`, `vit`) with the unit spikes each one's operands received in the run's first
T steps, for `hw.spiking_array.compare` to price against the integer accelerator.

Which population feeds which product, as the layers run them (`layers.SpikingBlock`):
q, k and v read the layer's input spikes (BERT: the previous layer's `norm2`, layer 0 the
embedding's; DINOv2, pre-norm: the layer's own `norm1`), the attention output reads `context`,
the intermediate projection the norm before the MLP (BERT `norm1`, DINOv2 `norm2`), the output
projection `gelu`. The attention score product reads q spikes against k's counts and k spikes
against q's (each meets a row of `length`), the context product probabilities against v's
counts (a row of the head width) and v spikes against the probabilities' (a row of `length`):
the same ACs `SpikingAttention.step` counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.arch import Arch
from mfmaccel.hw.spiking_array import SpikeFeed, SpikeGemm, break_even_rate, compare, weight_gemm
from mfmaccel.records import Record
from mfmaccel.spiking.bert import SpikingBert
from mfmaccel.spiking.layers import SpikingRun
from mfmaccel.spiking.vit import SpikingDinov2


class _Counts:
    """A run's unit spikes and neurons per population over its first `steps` steps."""

    def __init__(self, run: SpikingRun, steps: int | None) -> None:
        steps = run.steps if steps is None else steps
        if not 1 <= steps <= run.steps:
            raise UserInputError(f"steps must be between 1 and the run's {run.steps}, got "
                                 f"{steps}")
        self.run, self.steps = run, steps

    def spikes(self, population: str) -> int:
        return sum(self.run.spikes[population][:self.steps])

    def neurons(self, population: str) -> int:
        return self.run.neurons[population]


def _projection(name: str, role: str, linear, population: str, counts: _Counts, tokens: int
                ) -> SpikeGemm:
    """A GEMM with stored int8 weights (`linear`: an `IntLinear`, weight out x in) over
    `tokens` rows, fed by `population`."""
    n, k = linear.weight.shape
    return weight_gemm(name, role, population=population, spikes=counts.spikes(population),
                       neurons=counts.neurons(population), m=tokens, k=k, n=n)


def _feed(population: str, counts: _Counts, *, fan_out: int, values: int, value_bytes: int
          ) -> SpikeFeed:
    """An attention operand's spikes, each meeting `fan_out` of the other operand's `values`
    counts."""
    return SpikeFeed(population=population, spikes=counts.spikes(population),
                     neurons=counts.neurons(population), fan_out=fan_out,
                     stationary_bytes=values * value_bytes, value_bytes=value_bytes)


def _attention(index: int, attention, counts: _Counts, *, batch: int, length: int
               ) -> list[SpikeGemm]:
    """The score and context products of one layer, each fed by both its operands."""
    heads, hidden = attention.heads, attention.query.weight.shape[0]
    width, pairs = hidden // heads, batch * heads
    signed = math.ceil(attention.query.out.bits / 8)
    probability = math.ceil(attention.probability_bits / 8)
    p = f"{index}."
    score = SpikeGemm(
        name=f"{p}score", role="attention-score", m=length, k=width, n=length, batch=pairs,
        weight_bits=None,
        feeds=tuple(_feed(p + name, counts, fan_out=length, values=batch * length * hidden,
                          value_bytes=signed) for name in ("q", "k")))
    context = SpikeGemm(
        name=f"{p}context", role="attention-context", m=length, k=length, n=width,
        batch=pairs, weight_bits=None,
        feeds=(_feed(p + "probs", counts, fan_out=width, values=batch * length * hidden,
                     value_bytes=signed),
               _feed(p + "v", counts, fan_out=length, values=pairs * length * length,
                     value_bytes=probability)))
    return [score, context]


def _layer(index: int, layer, counts: _Counts, *, reads: str, mlp_reads: str, batch: int,
           length: int) -> list[SpikeGemm]:
    """One encoder layer's spike-fed GEMMs in the order they run; `reads`: the population q,
    k and v read, `mlp_reads`: the one the intermediate projection reads."""
    tokens, p, attention = batch * length, f"{index}.", layer.attention
    gemms = [_projection(p + name, "projection", getattr(attention, name), reads, counts,
                         tokens) for name in ("query", "key", "value")]
    gemms += _attention(index, attention, counts, batch=batch, length=length)
    gemms.append(_projection(p + "attention_out", "projection", layer.attention_out,
                             p + "context", counts, tokens))
    gemms.append(_projection(p + "intermediate", "ffn", layer.intermediate, mlp_reads, counts,
                             tokens))
    gemms.append(_projection(p + "output", "ffn", layer.output, p + "gelu", counts, tokens))
    return gemms


def bert_gemms(spiking: SpikingBert, input_ids: torch.Tensor, run: SpikingRun, *,
               steps: int | None = None) -> list[SpikeGemm]:
    """The spike-fed GEMMs of `spiking` on `input_ids` with the spikes of `run`'s first `steps`
    steps (None: all of them)."""
    counts = _Counts(run, steps)
    batch, length = input_ids.shape
    gemms: list[SpikeGemm] = []
    for index, layer in enumerate(spiking.program.layers):
        reads = "embed" if index == 0 else f"{index - 1}.norm2"
        gemms += _layer(index, layer, counts, reads=reads, mlp_reads=f"{index}.norm1",
                        batch=batch, length=length)
    return gemms


def dinov2_gemms(spiking: SpikingDinov2, images: int, run: SpikingRun, *,
                 steps: int | None = None) -> list[SpikeGemm]:
    """The spike-fed GEMMs of a DINOv2 tower on `images` images: the patch embedding fed by
    the pixels' spikes, then every layer's (pre-norm: q, k, v read `norm1`, the MLP `norm2`)."""
    counts = _Counts(run, steps)
    program = spiking.program
    length = program.cls_position.shape[0]
    gemms = [_projection("patches", "conv", program.patches.linear, "pixels", counts,
                         images * (length - 1))]
    for index, layer in enumerate(program.layers):
        gemms += _layer(index, layer, counts, reads=f"{index}.norm1",
                        mlp_reads=f"{index}.norm2", batch=images, length=length)
    return gemms




@dataclass
class SpikingEnergy(Record):
    """Every batch of a spiking run priced on `spiking_arch` against `arch` after `steps` steps
    ("settled": each batch's whole run), summed over the batches (`hw.spiking_array.compare`
    per batch: batches run one after another)."""

    arch: str
    spiking_arch: str
    steps: str
    integer_uj: float
    spiking_uj: float
    ratio: float  # spiking / integer
    fixed_share: float  # the spiking energy were nothing to fire, / integer: above 1, no rate pays
    break_even_rate: float  # unit spikes per fed neuron per step (0: no rate pays)
    spike_rate: float  # measured, same unit
    accumulates_per_mac: float
    dram_bytes: dict[str, float]
    latency_ms: dict[str, float]


def priced(batches: Sequence[tuple[Sequence[SpikeGemm], int]], arch: Arch, *,
           levels: int | None, label: str) -> SpikingEnergy:
    """`batches`: each batch's spike-fed GEMMs and the steps they ran."""
    results = [compare(gemms, arch, steps=steps, levels=levels) for gemms, steps in batches]
    integer = sum(r.integer.total_pj for r in results)
    spiking = sum(r.spiking.total_pj for r in results)
    fixed = sum(g.fixed_pj for r in results for g in r.gemms)
    spikes = sum(r.spikes for r in results)
    neuron_steps = sum(g.neurons * r.steps for r in results for g in r.gemms)
    per_spike = (spiking - fixed) / spikes if spikes else math.inf
    return SpikingEnergy(
        arch=arch.name, spiking_arch=results[0].spiking_arch, steps=label,
        integer_uj=integer * 1e-6, spiking_uj=spiking * 1e-6,
        ratio=spiking / integer, fixed_share=fixed / integer,
        break_even_rate=break_even_rate(integer_pj=integer, fixed_pj=fixed,
                                        pj_per_spike=per_spike, neurons=neuron_steps, steps=1),
        spike_rate=spikes / neuron_steps,
        accumulates_per_mac=sum(r.accumulates for r in results) / sum(r.macs for r in results),
        dram_bytes={side: sum(getattr(r, side).dram_bytes for r in results)
                    for side in ("integer", "spiking")},
        latency_ms={side: sum(r.latency_ms[side] for r in results)
                    for side in ("integer", "spiking")})


__all__ = ["SpikingEnergy", "bert_gemms", "dinov2_gemms", "priced"]

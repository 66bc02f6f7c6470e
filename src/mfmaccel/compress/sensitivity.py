"""Hierarchy-aware sensitivity: how much the model's predictions move when one part is
quantized, measured tier by tier.

1. network: every quantizable part at one bit-width;
2. block: each transformer block alone (all its linears), the head, and the token embeddings
   when they are a table of their own (untied);
3. module: each linear inside a block.

The signal is the KL divergence from the full-precision next-token distribution on calibration
text (less noisy than perplexity on a few thousand tokens); an encoder without a head (BERT,
`minilm-l6`) uses the cosine distance of each token's final hidden state instead. Tiers 1-2
rerun only the blocks at and after the probed one, from the cached full-precision block inputs
(`blocks.BlockCache`); tier 3 runs the one block alone and splits the block's KL among its
modules in proportion to the error each adds to the block's output. Cost grows with parts x
bit-widths, never with their combinations.

Every probe is independent of the others (`prober.Probe`), so they may run as jobs on worker
processes (`probe_jobs`) when the model has a name the workers can load it by.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from mfmaccel.compress.probe_jobs import ProbeSource, probe_jobs, probe_on_worker
from mfmaccel.compress.prober import Probe, Prober, block_index, run_probe, signal_of
from mfmaccel.parallel import IN_PROCESS, Executor, check_reachable
from mfmaccel.progress import counter
from mfmaccel.records import Record
from mfmaccel.runtime.grid import QuantSpec
from mfmaccel.runtime.parts import EMBED, HEAD, quantizable_parts


@dataclass
class Sensitivity(Record):
    """KL (nats per token; for an encoder, cosine distance per token) caused by quantizing
    each part, per bit-width label. `seconds`: in this process, the capture and each tier's
    probes; on workers, all probes together (each worker's capture included)."""

    signal: str
    tokens: int
    specs: dict[str, dict]  # label -> QuantSpec fields
    network: dict[str, float]  # label -> KL with every part quantized
    blocks: dict[str, dict[str, float]]  # block -> label -> KL
    modules: dict[str, dict[str, float]]  # part -> label -> KL share
    seconds: dict[str, float] = field(default_factory=dict)


def measure_sensitivity(
    module: nn.Module,
    batches: Sequence[torch.Tensor],
    specs: Sequence[QuantSpec],
    modules_tier: bool = True,
    progress: Callable[[int, int], None] | None = None,
    *,
    executor: Executor = IN_PROCESS,
    source: ProbeSource | None = None,
) -> Sensitivity:
    """All three tiers for every spec in `specs` on calibration `batches` of token ids (or
    embeddings); the probes run on `executor`, whose workers build `module` from `source`."""
    check_reachable(executor, source, "this model")
    start = time.perf_counter()
    parts = quantizable_parts(module)
    by_block = _parts_by_block(parts)
    first = [Probe(spec, block) for spec in specs for block in (None, *by_block)]
    split = [b for b, inside in by_block.items()
             if modules_tier and b not in (HEAD, EMBED) and len(inside) > 1]
    second = [Probe(spec, block, name) for spec in specs for block in split
              for name in by_block[block]]
    if executor.in_process:
        values, seconds = _measured_here(module, batches, first, second, progress)
    else:
        jobs = probe_jobs(source, batches, first + second)
        values = executor.map(probe_on_worker, jobs, progress=progress)
        seconds = {"probes": time.perf_counter() - start}
    seconds["total"] = time.perf_counter() - start
    measured = dict(zip(first + second, values, strict=True))
    network, blocks, modules = _tiers(by_block, list(parts), specs, measured)
    return Sensitivity(
        signal=signal_of(module), tokens=sum(int(b.shape[1]) for b in batches),
        specs={s.label: {"bits": s.bits, "group_size": s.group_size, "symmetric": s.symmetric}
               for s in specs},
        network=network, blocks=blocks, modules=modules, seconds=seconds,
    )


def _parts_by_block(parts: dict) -> dict[str, list[str]]:
    """Block -> the names of its quantizable parts (`runtime.parts.quantizable_parts`), blocks
    in model order (embeddings first, head last)."""
    blocks = sorted({p.block for p, _ in parts.values()}, key=_block_order)
    by_block: dict[str, list[str]] = {b: [] for b in blocks}
    for name, (part, _) in parts.items():
        by_block[part.block].append(name)
    return by_block


def _measured_here(module: nn.Module, batches: Sequence[torch.Tensor], first: list[Probe],
                   second: list[Probe], progress: Callable[[int, int], None] | None
                   ) -> tuple[list[float], dict[str, float]]:
    """The probes in this process, on one Prober; seconds of the capture and of each tier."""
    t = time.perf_counter()
    prober = Prober(module, batches)
    seconds = {"capture": time.perf_counter() - t}
    tick = counter(progress, len(first) + len(second))
    values = []
    for probes, phase in ((first, "network_and_blocks"), (second, "modules")):
        t = time.perf_counter()
        for probe in probes:
            values.append(run_probe(prober, probe))
            tick()
        seconds[phase] = time.perf_counter() - t
    return values, seconds


def _tiers(by_block: dict[str, list[str]], names: list[str], specs: Sequence[QuantSpec],
           value: dict[Probe, float]) -> tuple[dict, dict, dict]:
    """The network, block and module tiers from the probes' values (modules in `names`'
    order): a block measured by its modules' output errors splits its KL among them in
    proportion; any other block's modules each carry the whole block's KL."""
    network = {spec.label: value[Probe(spec)] for spec in specs}
    blocks = {b: {spec.label: value[Probe(spec, b)] for spec in specs} for b in by_block}
    modules: dict[str, dict[str, float]] = {n: {} for n in names}
    for spec in specs:
        for block, inside in by_block.items():
            kl = blocks[block][spec.label]
            errors = {n: value.get(Probe(spec, block, n)) for n in inside}
            if any(error is None for error in errors.values()):
                for name in inside:
                    modules[name][spec.label] = kl
                continue
            whole = sum(errors.values()) or 1.0
            for name in inside:
                modules[name][spec.label] = kl * errors[name] / whole
    return network, blocks, modules


def _block_order(block: str) -> tuple[int, int]:
    if block in (HEAD, EMBED):
        return (1, 0) if block == HEAD else (-1, 0)
    return (0, block_index(block))

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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mfmaccel.compress.blocks import (
    BlockCache,
    capture_blocks,
    head_logprobs,
    last_block_output,
    run_blocks,
)
from mfmaccel.compress.fakequant import fake_quantized
from mfmaccel.progress import counter
from mfmaccel.records import Record
from mfmaccel.runtime.anatomy import decoder_layers, embeddings_tied, has_head
from mfmaccel.runtime.grid import QuantSpec
from mfmaccel.runtime.parts import EMBED, HEAD, quantizable_parts


@dataclass
class Sensitivity(Record):
    """KL (nats per token; for an encoder, cosine distance per token) caused by quantizing
    each part, per bit-width label."""

    signal: str
    tokens: int
    specs: dict[str, dict]  # label -> QuantSpec fields
    network: dict[str, float]  # label -> KL with every part quantized
    blocks: dict[str, dict[str, float]]  # block -> label -> KL
    modules: dict[str, dict[str, float]]  # part -> label -> KL share
    seconds: dict[str, float] = field(default_factory=dict)


def _kl(reference: torch.Tensor, logprobs: torch.Tensor) -> float:
    """Sum over tokens of KL(reference || logprobs)."""
    return float((reference.exp() * (reference - logprobs)).sum())


def _cosine_distance(reference: torch.Tensor, unit: torch.Tensor) -> float:
    """Sum over tokens of 1 - cos(reference, probe) (both unit length per token)."""
    return float((1 - (reference * unit).sum(-1)).sum())


class Prober:
    """Runs probes against cached full-precision block inputs and output distributions."""

    def __init__(self, module: nn.Module, batches: Sequence[torch.Tensor]) -> None:
        self.module = module
        self.cache: BlockCache = capture_blocks(module, list(batches))
        self.signal = "kl" if has_head(module) else "cosine"
        self.reference = [self.output(out) for out in self.cache.outputs]
        self.tokens = sum(int(b.shape[1]) for b in batches)
        self.parts = quantizable_parts(module)

    def kl_from(self, start: int | None) -> float:
        """Mean KL (or cosine distance) per token, rerunning blocks `start`.. (None: the whole
        model; past the last block: none, the head reads the cached last-block outputs)."""
        total = 0.0
        for batch, reference in enumerate(self.reference):
            if start is None:
                hidden = last_block_output(self.module, self.cache.input_ids[batch])
            elif start >= self.cache.blocks:
                hidden = self.cache.outputs[batch]
            else:
                hidden = run_blocks(self.module, self.cache, start, batch)
            total += self.distance(reference, self.output(hidden))
        return total / self.tokens

    def recapture(self) -> None:
        """Block inputs from the module as it computes now (other weights swapped in), so a
        probe of one block runs among the others as they are; the reference stays as it was."""
        self.cache = capture_blocks(self.module, self.cache.input_ids)

    def output(self, hidden: torch.Tensor) -> torch.Tensor:
        """What probes compare: next-token log-probabilities, or unit hidden states."""
        if self.signal == "kl":
            return head_logprobs(self.module, hidden)
        return F.normalize(hidden.float(), dim=-1)

    def distance(self, reference: torch.Tensor, output: torch.Tensor) -> float:
        return (_kl if self.signal == "kl" else _cosine_distance)(reference, output)

    def probe(self, names: Sequence[str], spec: QuantSpec, start: int | None) -> float:
        chosen = {n: (self.parts[n][1], spec) for n in names}
        with fake_quantized(chosen):
            return self.kl_from(start)

    def block_output_error(self, index: int, name: str, spec: QuantSpec) -> float:
        """Squared error added to block `index`'s output by quantizing one of its linears."""
        total = 0.0
        with fake_quantized({name: (self.parts[name][1], spec)}):
            for batch in range(len(self.reference)):
                out = _one_block(self.module, self.cache, index, batch)
                total += float(((out - _fp_block_output(self.cache, index, batch)) ** 2).sum())
        return total


def _one_block(module: nn.Module, cache: BlockCache, index: int, batch: int) -> torch.Tensor:
    layer = decoder_layers(module)[index]
    with torch.inference_mode():
        out = layer(cache.inputs[index][batch], **cache.kwargs[index][batch])
    return out[0] if isinstance(out, tuple) else out


def _fp_block_output(cache: BlockCache, index: int, batch: int) -> torch.Tensor:
    return cache.inputs[index + 1][batch] if index + 1 < cache.blocks else cache.outputs[batch]


def measure_sensitivity(
    module: nn.Module,
    batches: Sequence[torch.Tensor],
    specs: Sequence[QuantSpec],
    modules_tier: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Sensitivity:
    """All three tiers for every spec in `specs` on calibration `batches` of token ids."""
    start = time.perf_counter()
    prober = Prober(module, batches)
    seconds = {"capture": time.perf_counter() - start}
    blocks = sorted({p.block for p, _ in prober.parts.values()}, key=_block_order)
    by_block: dict[str, list[str]] = {b: [] for b in blocks}
    for name, (part, _) in prober.parts.items():
        by_block[part.block].append(name)
    total = len(specs) * (1 + len(blocks)) + (len(specs) * len(prober.parts) if modules_tier
                                               else 0)
    tick = counter(progress, total)

    network, block_kl = {}, {b: {} for b in blocks}
    modules: dict[str, dict[str, float]] = {n: {} for n in prober.parts}
    t = time.perf_counter()
    for spec in specs:
        network[spec.label] = prober.probe(list(prober.parts), spec, None)
        tick()
        for block in blocks:
            block_kl[block][spec.label] = prober.probe(by_block[block], spec,
                                                       first_block_to_rerun(block, prober))
            tick()
    seconds["network_and_blocks"] = time.perf_counter() - t
    t = time.perf_counter()
    for spec in specs:
        for block in blocks:
            names = by_block[block]
            if block in (HEAD, EMBED) or not modules_tier or len(names) == 1:
                for name in names:
                    modules[name][spec.label] = block_kl[block][spec.label]
                continue
            index = int(block.split(".")[1])
            errors = {n: prober.block_output_error(index, n, spec) for n in names}
            for _ in names:
                tick()
            whole = sum(errors.values()) or 1.0
            for name in names:
                modules[name][spec.label] = block_kl[block][spec.label] * errors[name] / whole
    seconds["modules"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    return Sensitivity(
        signal=prober.signal, tokens=prober.tokens,
        specs={s.label: {"bits": s.bits, "group_size": s.group_size, "symmetric": s.symmetric}
               for s in specs},
        network=network, blocks=block_kl, modules=modules, seconds=seconds,
    )


def first_block_to_rerun(block: str, prober: Prober) -> int | None:
    """Where a probe of `block` starts. The embeddings feed every block (None: rerun the whole
    model), and so does a head tied to them, whose quantized weight the embeddings then read;
    an untied head follows the blocks (their cached outputs); a block reruns itself and the
    ones after it."""
    if block == EMBED or (block == HEAD and embeddings_tied(prober.module)):
        return None
    return prober.cache.blocks if block == HEAD else int(block.split(".")[1])


def _block_order(block: str) -> tuple[int, int]:
    if block in (HEAD, EMBED):
        return (1, 0) if block == HEAD else (-1, 0)
    return (0, int(block.split(".")[1]))

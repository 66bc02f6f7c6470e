"""One sensitivity probe: how far the model's output moves when some of its linears compute with
round-to-nearest weights, measured against a cache of full-precision block inputs
(`blocks.BlockCache`) so only the blocks at and after the change rerun.

`Prober` holds the cache and the reference outputs; a `Probe` names one measurement (every
part, one block's parts, or one linear's error at its block's output), so the measurements of a
sensitivity are independent jobs (`probe_jobs`) that any process holding a `Prober` of the same
model and batches can run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
from mfmaccel.runtime.anatomy import decoder_layers, embeddings_tied, has_head
from mfmaccel.runtime.grid import QuantSpec
from mfmaccel.runtime.parts import EMBED, HEAD, quantizable_parts


def _kl(reference: torch.Tensor, logprobs: torch.Tensor) -> float:
    """Sum over tokens of KL(reference || logprobs)."""
    return float((reference.exp() * (reference - logprobs)).sum())


def _cosine_distance(reference: torch.Tensor, unit: torch.Tensor) -> float:
    """Sum over tokens of 1 - cos(reference, probe) (both unit length per token)."""
    return float((1 - (reference * unit).sum(-1)).sum())


def signal_of(module: nn.Module) -> str:
    """What probes of `module` compare: next-token KL, or, without a head, cosine distance."""
    return "kl" if has_head(module) else "cosine"


class Prober:
    """Runs probes against cached full-precision block inputs and output distributions."""

    def __init__(self, module: nn.Module, batches: Sequence[torch.Tensor]) -> None:
        self.module = module
        self.cache: BlockCache = capture_blocks(module, list(batches))
        self.signal = signal_of(module)
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


def first_block_to_rerun(block: str, prober: Prober) -> int | None:
    """Where a probe of `block` starts. The embeddings feed every block (None: rerun the whole
    model), and so does a head tied to them, whose quantized weight the embeddings then read;
    an untied head follows the blocks (their cached outputs); a block reruns itself and the
    ones after it."""
    if block == EMBED or (block == HEAD and embeddings_tied(prober.module)):
        return None
    return prober.cache.blocks if block == HEAD else block_index(block)


@dataclass(frozen=True)
class Probe:
    """One measurement at `spec`: every part (`block` None), the parts of `block`, or (with
    `module`) the squared error one linear of `block` adds to that block's output."""

    spec: QuantSpec
    block: str | None = None
    module: str | None = None


def run_probe(prober: Prober, probe: Probe) -> float:
    """What `probe` measures, on `prober`'s model and batches."""
    if probe.block is None:
        return prober.probe(list(prober.parts), probe.spec, None)
    if probe.module is not None:
        return prober.block_output_error(block_index(probe.block), probe.module, probe.spec)
    names = [n for n, (part, _) in prober.parts.items() if part.block == probe.block]
    return prober.probe(names, probe.spec, first_block_to_rerun(probe.block, prober))


def block_index(block: str) -> int:
    """"layers.3" -> 3."""
    return int(block.split(".")[1])

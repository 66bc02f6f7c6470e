"""Where the transformer blocks of a causal LM, a VLM's language model or a BERT-style encoder
are, and a cache of each block's full-precision inputs on calibration text.

One full-precision pass records, for every block, the hidden states it received and the keyword
arguments it was called with (masks and rotary embeddings can differ per block, e.g. Gemma3's
local and global layers). A probe that changes block i then reruns only blocks i..N-1 from the
cache instead of the whole model, and GPTQ quantizes block by block from the same cache.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mfmaccel.runtime.anatomy import decoder_body, decoder_layers, final_norm


@dataclass
class BlockCache:
    """Per block, per calibration batch: the hidden states in and the keyword arguments."""

    inputs: list[list[torch.Tensor]]  # [block][batch]
    kwargs: list[list[dict[str, Any]]]  # [block][batch]
    outputs: list[torch.Tensor]  # hidden states after the last block, per batch
    input_ids: list[torch.Tensor] = field(default_factory=list)

    @property
    def blocks(self) -> int:
        return len(self.inputs)


class _Stop(Exception):
    pass


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def body_inputs(batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """A calibration batch as the decoder body's keyword: (1, T) token ids, or (1, T, hidden)
    embeddings (a VLM's image tokens and text, `calibration.vqa_calibration_batches`)."""
    return {"inputs_embeds" if batch.is_floating_point() else "input_ids": batch}


@torch.inference_mode()
def capture_blocks(module: nn.Module, batches: list[torch.Tensor]) -> BlockCache:
    """Run `module` on each batch (token ids or embeddings), recording every block's inputs."""
    layers = decoder_layers(module)
    inputs: list[list[torch.Tensor]] = [[] for _ in layers]
    kwargs: list[list[dict[str, Any]]] = [[] for _ in layers]
    outputs: list[torch.Tensor] = []

    def recorder(index: int):
        signature = inspect.signature(layers[index].forward)  # once per block, not per call

        def hook(_, args, kw):
            named = signature.bind_partial(*args, **kw).arguments
            named.update(named.pop("kwargs", {}))  # a block's **kwargs, flattened
            inputs[index].append(named.pop("hidden_states").detach())
            kwargs[index].append(named)  # positional extras (BERT's mask) by name
        return hook

    handles = [layer.register_forward_pre_hook(recorder(i), with_kwargs=True)
               for i, layer in enumerate(layers)]
    last = layers[-1].register_forward_hook(lambda _, __, out: outputs.append(_hidden(out)))
    try:
        for ids in batches:
            decoder_body(module)(**body_inputs(ids), use_cache=False)
    finally:
        for handle in [*handles, last]:
            handle.remove()
    return BlockCache(inputs, kwargs, outputs, list(batches))


@torch.inference_mode()
def last_block_output(module: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Hidden states leaving the last block (before the final norm) for token ids `ids`."""
    captured: list[torch.Tensor] = []
    hook = decoder_layers(module)[-1].register_forward_hook(
        lambda _, __, out: captured.append(_hidden(out)))
    try:
        decoder_body(module)(**body_inputs(ids), use_cache=False)
    finally:
        hook.remove()
    return captured[0]


@torch.inference_mode()
def run_blocks(module: nn.Module, cache: BlockCache, start: int, batch: int,
               hidden: torch.Tensor | None = None) -> torch.Tensor:
    """Blocks `start`.. of `module` on calibration batch `batch`, from the cached input of
    block `start` (or from `hidden`), with each block's cached keyword arguments."""
    layers = decoder_layers(module)
    hidden = cache.inputs[start][batch] if hidden is None else hidden
    for index in range(start, len(layers)):
        hidden = _hidden(layers[index](hidden, **cache.kwargs[index][batch]))
    return hidden


@torch.inference_mode()
def head_logprobs(module: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the next token from last-block hidden states (final norm + head)."""
    logits = module.get_output_embeddings()(final_norm(module)(hidden))
    softcap = getattr(module.config.get_text_config(), "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits.float().log_softmax(-1)

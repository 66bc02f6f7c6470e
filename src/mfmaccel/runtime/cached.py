"""A causal LM with a KV cache that knows which tokens it holds, so it can roll back.

Speculative decoding feeds tokens that may later be rejected; instead of bookkeeping at every
call site, `CachedLM.extend(sequence)` keeps the longest cached prefix that agrees with
`sequence`, crops the rest from the cache, and runs only the new tokens.
"""

from __future__ import annotations

import copy

import torch
from transformers import DynamicCache

from mfmaccel.errors import UserInputError


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class CachedLM:
    """`module` plus the tokens its cache holds; one forward per `extend`."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.cache = DynamicCache()
        self.tokens: list[int] = []
        self.forwards = 0  # forward passes run, for cost accounting
        self.context_limit = _context_limit(module)

    def reset(self) -> None:
        self.cache = DynamicCache()
        self.tokens = []

    def adopt(self, other: CachedLM) -> None:
        """Continue from a copy of `other`'s cache and tokens, as many layers of it as this
        model has: a draft built from the target itself (its first layers, a quantized copy)
        then attends to the target's keys and values over the prompt instead of computing its
        own."""
        layers = self.module.config.get_text_config().num_hidden_layers
        self.cache = DynamicCache()
        self.cache.layers = copy.deepcopy(other.cache.layers[:layers])
        self.tokens = list(other.tokens)

    @torch.inference_mode()
    def extend(self, sequence: list[int], last: int | None = None) -> torch.Tensor:
        """Logits (n, V) at the last n positions of `sequence`: n is how many tokens had to be
        run (at least one: the last token's logits are always returned), or at most `last`.

        Ask for only the positions you read: the vocabulary head over a whole prompt is
        most of a prefill's cost on a CPU (Qwen2.5-1.5B: a 233M-parameter head)."""
        if not sequence:
            raise UserInputError("cannot decode from an empty prompt; give at least one token")
        if self.context_limit and len(sequence) > self.context_limit:
            raise UserInputError(f"{len(sequence)} tokens exceed the model's context window of "
                                 f"{self.context_limit}; shorten the prompt or max_new_tokens")
        keep = min(common_prefix(self.tokens, sequence), len(sequence) - 1)
        if keep < len(self.tokens):
            self.cache.crop(keep - len(self.tokens))
        new = torch.tensor([sequence[keep:]])
        positions = 0 if last is None else min(last, new.shape[1])  # 0: every position
        logits = self.module(input_ids=new, cache=self.cache, use_cache=True,
                             logits_to_keep=positions).logits[0]
        self.tokens = list(sequence)
        self.forwards += 1
        return logits


def _context_limit(module: torch.nn.Module) -> int | None:
    config = module.config.get_text_config()
    return getattr(config, "max_position_embeddings", None)

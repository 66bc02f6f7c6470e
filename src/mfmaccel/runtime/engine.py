"""A plain greedy decoding loop over Hugging Face causal LMs, with a KV cache.

Why our own loop: `generate` does a lot of per-token bookkeeping that dominates batch-1 decode
of small models on a CPU, and later stages (speculative decoding, cascades) need to own the
cache. This loop does one forward per token and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from mfmaccel.runtime.sampling import Sampling, distribution


@dataclass
class Generation:
    """New tokens (prompt excluded) and where the time went."""

    tokens: list[int] = field(default_factory=list)
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        steps = len(self.tokens) - 1  # the first token comes out of the prefill
        return steps / self.decode_seconds if steps > 0 and self.decode_seconds > 0 else 0.0


@torch.inference_mode()
def greedy_generate(
    module: torch.nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    eos_token_ids: set[int] | None = None,
    should_stop: Callable[[list[int]], bool] | None = None,
    **prefill_inputs: torch.Tensor,
) -> Generation:
    """Greedy decode from a (1, T) prompt; stops at max_new_tokens, an EOS id or `should_stop`.

    `prefill_inputs` (e.g. `pixel_values` for a VLM) go to the first forward pass only.
    """
    eos_token_ids = eos_token_ids or set()
    cache = DynamicCache()
    start = time.perf_counter()
    logits = module(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1,
                    **prefill_inputs).logits
    token = int(logits[0, -1].argmax())
    out = Generation(tokens=[token], prefill_seconds=time.perf_counter() - start)
    step_input = torch.empty((1, 1), dtype=input_ids.dtype)
    start = time.perf_counter()
    while len(out.tokens) < max_new_tokens and token not in eos_token_ids:
        if should_stop is not None and should_stop(out.tokens):
            break
        step_input[0, 0] = token
        logits = module(input_ids=step_input, cache=cache, use_cache=True).logits
        token = int(logits[0, -1].argmax())
        out.tokens.append(token)
    out.decode_seconds = time.perf_counter() - start
    return out


def eos_ids(module: torch.nn.Module, tokenizer) -> set[int]:
    """Every id that ends a turn: the generation config's EOS ids plus the tokenizer's."""
    ids: set[int] = set()
    config_eos = getattr(getattr(module, "generation_config", None), "eos_token_id", None)
    for value in (config_eos, getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids


@torch.inference_mode()
def generate_batch(
    module: torch.nn.Module,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    pad_token_id: int,
    eos_token_ids: set[int] | None = None,
    row_done: Callable[[list[int]], bool] | None = None,
    sampling: Sampling | None = None,
) -> list[list[int]]:
    """Decode several prompts at once (left-padded), for evaluation throughput: greedy, or
    sampled as `sampling` says (one seeded generator for the whole batch).

    Batch-1 decode is memory-bound, so B rows cost far less than B times one row. A row stops at
    an EOS id or when `row_done(tokens)` says so, and leaves the batch (its cache rows
    are dropped); the batch stops when every row has.
    """
    eos_token_ids = eos_token_ids or set()
    sampling = sampling or Sampling()
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    logits = module(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                    use_cache=True, logits_to_keep=1).logits
    return _decode_rows(module, cache, logits[:, -1], mask, positions,
                        max_new_tokens=max_new_tokens, eos_token_ids=eos_token_ids,
                        row_done=row_done, sampling=sampling)


@torch.inference_mode()
def sample_rows(
    module: torch.nn.Module,
    prompt: list[int],
    *,
    count: int,
    max_new_tokens: int,
    sampling: Sampling,
    eos_token_ids: set[int] | None = None,
    row_done: Callable[[list[int]], bool] | None = None,
) -> list[list[int]]:
    """`count` sampled continuations of one prompt, decoded as one batch.

    Why: k candidates of one prompt (AutoChip-style rounds, pass@k) share the prompt, so it is
    prefilled once and its cache repeated, and the k rows then decode together, which on a
    memory-bound CPU costs far less than k separate decodes. One seeded generator draws for
    every row, so the k rows differ from each other but repeat from run to run.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    cache = DynamicCache()
    ids = torch.tensor([prompt], dtype=torch.long)
    logits = module(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits
    cache.batch_repeat_interleave(count)
    mask = torch.ones((count, len(prompt)), dtype=torch.long)
    positions = torch.arange(len(prompt)).expand(count, -1)
    return _decode_rows(module, cache, logits[:, -1].expand(count, -1), mask, positions,
                        max_new_tokens=max_new_tokens, eos_token_ids=eos_token_ids or set(),
                        row_done=row_done, sampling=sampling)


def _decode_rows(module: torch.nn.Module, cache: DynamicCache, logits: torch.Tensor,
                 mask: torch.Tensor, positions: torch.Tensor, *, max_new_tokens: int,
                 eos_token_ids: set[int], row_done: Callable[[list[int]], bool] | None,
                 sampling: Sampling) -> list[list[int]]:
    """Decode every row from its prefilled cache and last (B, V) logits; a finished row leaves
    the batch (its cache rows dropped), and decoding stops when every row has."""
    generator = sampling.generator()
    outputs: list[list[int]] = [[] for _ in range(logits.shape[0])]
    rows = list(range(len(outputs)))  # the rows still decoding, in batch order
    for produced in range(1, max_new_tokens + 1):
        step = _next_tokens(logits, sampling, generator)
        keep = []
        for slot, (row, token) in enumerate(zip(rows, step.tolist(), strict=True)):
            outputs[row].append(token)
            done = token in eos_token_ids or (row_done is not None and row_done(outputs[row]))
            if not done:
                keep.append(slot)
        if not keep or produced == max_new_tokens:
            break
        if len(keep) < len(rows):
            step, mask, positions = _select_rows(cache, keep, step, mask, positions)
            rows = [rows[slot] for slot in keep]
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype)], dim=1)
        positions = positions[:, -1:] + 1
        logits = module(input_ids=step.unsqueeze(1), attention_mask=mask, position_ids=positions,
                        cache=cache, use_cache=True).logits[:, -1]
    return outputs


def _next_tokens(logits: torch.Tensor, sampling: Sampling,
                 generator: torch.Generator) -> torch.Tensor:
    """One token per row of (B, V) logits."""
    if sampling.greedy:
        return logits.argmax(-1)
    return torch.multinomial(distribution(logits, sampling), 1, generator=generator).squeeze(1)


def _select_rows(cache: DynamicCache, keep: list[int], *tensors: torch.Tensor):
    """Drop finished rows from the cache and the per-row tensors, so they cost nothing more."""
    index = torch.tensor(keep)
    cache.batch_select_indices(index)
    return tuple(t[index] for t in tensors)

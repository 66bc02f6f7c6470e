"""Perplexity with a sliding window: every token is scored once, with up to `context - stride`
tokens of left context carried over from the previous window."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.models.record import CAUSAL_LM, LoadedModel
from mfmaccel.records import Record

DEFAULT_CONTEXT = 512  # tokens per window unless the caller or the model's window says less


@dataclass
class PerplexityResult(Record):
    model: str
    corpus: str
    perplexity: float
    mean_nll: float
    tokens: int
    context: int
    stride: int
    seconds: float


def require_causal_lm(model: LoadedModel, task: str) -> None:
    if model.kind != CAUSAL_LM:
        raise UserInputError(
            f"{task} needs a causal language model; '{model.name}' is a {model.kind} model "
            "(try smollm2-135m, qwen2.5-coder-0.5b or tiny-llama)"
        )


def window_spans(n_tokens: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, n_scored) per window: scored tokens are the last `n_scored` of [begin, end).

    Token 0 has no left context and is never scored; every other token is scored exactly once,
    always with at least one token of context inside its window.
    """
    if context < 2 or not 0 < stride <= context:
        raise UserInputError(f"need context >= 2 and stride in 1..context, got {context}/{stride}")
    step = min(stride, context - 1)
    end = min(context, n_tokens)
    spans = [(0, end, end - 1)]
    while end < n_tokens:
        new_end = min(end + step, n_tokens)
        spans.append((max(0, new_end - context), new_end, new_end - end))
        end = new_end
    return spans


@torch.inference_mode()
def perplexity(
    model: LoadedModel,
    text: str,
    *,
    context: int | None = None,
    stride: int | None = None,
    max_tokens: int | None = None,
    corpus: str = "text",
    progress: Callable[[int, int], None] | None = None,
) -> PerplexityResult:
    """exp(mean negative log-likelihood) of `text` (first `max_tokens` tokens if given), in
    windows of `context` tokens (default: 512, or the model's window where it is shorter)."""
    require_causal_lm(model, "perplexity")
    limit = model.context_length
    context = context or min(DEFAULT_CONTEXT, limit or DEFAULT_CONTEXT)
    stride = stride or context
    if limit is not None and context > limit:
        raise UserInputError(f"context {context} exceeds '{model.name}' window {limit}; use a "
                             f"context of at most {limit}")
    ids = model.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if len(ids) < 2:
        raise UserInputError("the text is too short for perplexity (needs at least 2 tokens)")
    start = time.perf_counter()
    total_nll, total_scored = 0.0, 0
    spans = window_spans(len(ids), context, stride)
    for i, (begin, end, n_scored) in enumerate(spans):
        logits = model.module(input_ids=ids[begin:end].unsqueeze(0)).logits[0, -n_scored - 1 : -1]
        targets = ids[end - n_scored : end]
        nll = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
        total_nll += float(nll)
        total_scored += n_scored
        if progress:
            progress(i + 1, len(spans))
    mean_nll = total_nll / total_scored
    return PerplexityResult(
        model=model.name, corpus=corpus, perplexity=math.exp(mean_nll), mean_nll=mean_nll,
        tokens=total_scored, context=context, stride=stride,
        seconds=time.perf_counter() - start,
    )

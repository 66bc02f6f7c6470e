"""The check of a co-design's prediction: quantize a copy of the model by an assignment's plan
(compress's quantize path: round to nearest, packed `QuantLinear`s, the rest rounded to fp16,
which is what the sensitivity's probes fake) and measure the signal the sensitivity predicts
(KL from full precision's next-token distribution per token, or the cosine distance of the
last block's hidden states per token) on held-out batches the sensitivity never saw."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mfmaccel.compress.blocks import head_logprobs, last_block_output
from mfmaccel.compress.prober import Prober
from mfmaccel.compress.quantize import quantize_module
from mfmaccel.runtime.plan import QuantPlan


def measured_quality(module: nn.Module, heldout: Sequence[torch.Tensor],
                     plans: Sequence[QuantPlan],
                     progress: Callable[[int, int], None] | None = None) -> list[float]:
    """Per plan: the signal per held-out token, the model quantized by the plan against the
    model as it is (left untouched: each plan quantizes a copy)."""
    reference = Prober(module, heldout)
    measured = []
    for done, plan in enumerate(plans, 1):
        quantized = quantize_module(copy.deepcopy(module), plan)
        measured.append(_distance(reference, quantized))
        del quantized
        if progress:
            progress(done, len(plans))
    return measured


@torch.inference_mode()
def _distance(reference: Prober, quantized: nn.Module) -> float:
    """The quantized model's signal per token against the reference's cached outputs; its own
    final norm and head (quantized) read its hidden states."""
    total = 0.0
    for batch, expected in zip(reference.cache.input_ids, reference.reference, strict=True):
        hidden = last_block_output(quantized, batch)
        output = (head_logprobs(quantized, hidden) if reference.signal == "kl"
                  else F.normalize(hidden.float(), dim=-1))
        total += reference.distance(expected, output)
    return total / reference.tokens

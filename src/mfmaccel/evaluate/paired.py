"""Two models on the same questions: the accuracy drop with a paired bootstrap interval.

Why paired: both models answer the same questions, so most of the sampling noise is shared.
Resampling questions (not each model's accuracy on its own) gives an interval on the drop that
is several times tighter than two independent intervals, which is what a "within one point"
claim on a thousand questions needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.records import Record

CONFIDENCE = 0.95


@dataclass
class PairedComparison(Record):
    """`baseline` against `variant` on the same `questions`; drop = baseline - variant."""

    questions: int
    baseline_accuracy: float
    variant_accuracy: float
    drop: float
    only_baseline_right: int  # the discordant pairs: all a paired test looks at
    only_variant_right: int
    drop_low: float  # the 95% paired bootstrap interval of the drop
    drop_high: float


def compare_paired(baseline: Sequence[bool], variant: Sequence[bool], *,
                   resamples: int = 5_000, seed: int = 0) -> PairedComparison:
    """The drop in accuracy from `baseline` to `variant`, per-question hits in the same order."""
    if len(baseline) != len(variant) or not baseline:
        raise UserInputError(f"a paired comparison needs the same questions for both models; "
                             f"got {len(baseline)} and {len(variant)} answers")
    base = torch.tensor(list(baseline), dtype=torch.float64)
    other = torch.tensor(list(variant), dtype=torch.float64)
    difference = base - other
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(difference), (resamples, len(difference)), generator=generator)
    drops = difference[picks].mean(dim=1)
    tail = (1 - CONFIDENCE) / 2
    low, high = torch.quantile(drops, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return PairedComparison(
        questions=len(difference), baseline_accuracy=float(base.mean()),
        variant_accuracy=float(other.mean()), drop=float(difference.mean()),
        only_baseline_right=int((difference > 0).sum()),
        only_variant_right=int((difference < 0).sum()),
        drop_low=float(low), drop_high=float(high))

"""Majority-answer baseline: the accuracy a model gets without looking at the image.

A model that does not beat this per question type has learned answer priors, not vision.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from mfmaccel.data.medvqa.sample import VQASample
from mfmaccel.errors import UserInputError


class Answered(Protocol):
    """What the baseline reads of a train sample: a `VQASample`, or a `PlannedAnswer` (the
    answer without its image)."""

    question_type: str
    answer: str


def _most_common(answers: list[str]) -> str:
    """The most frequent answer; ties go to the alphabetically first, so it is deterministic."""
    counts = Counter(answers)
    return min(counts, key=lambda answer: (-counts[answer], answer))


def majority_baseline(train: Sequence[Answered], test: Sequence[VQASample]
                      ) -> dict[str, float]:
    """Accuracy per question_type (and "overall") of answering every test question with the
    most common train answer of its question_type (the overall train majority for types the
    train set lacks)."""
    if not train or not test:
        raise UserInputError("majority_baseline needs non-empty train and test sample lists")
    by_type: dict[str, list[str]] = {}
    for sample in train:
        by_type.setdefault(sample.question_type, []).append(sample.answer)
    guesses = {qtype: _most_common(answers) for qtype, answers in by_type.items()}
    fallback = _most_common([s.answer for s in train])
    hits: dict[str, list[bool]] = {}
    for sample in test:
        guess = guesses.get(sample.question_type, fallback)
        hits.setdefault(sample.question_type, []).append(guess == sample.answer)
    result = {qtype: sum(h) / len(h) for qtype, h in sorted(hits.items())}
    result["overall"] = sum(sum(h) for h in hits.values()) / len(test)
    return result

"""Training text for each phase, from the benchmark generator's ground truth.

Phase 1 (alignment): "describe the image" -> the caption. Phase 2 (instruction tuning): for
every image, each question type it supports in phrasings unlike the benchmark's, answered once
in a sentence and once, LLaVA-1.5 style, in a word when asked to ("Answer with a word or
number."). Phase 3 (downstream): the benchmark's own closed questions and answers.
"""

from __future__ import annotations

import numpy as np

from mfmaccel.data.medvqa.captions import CaptionSample, ImageFacts, caption, join_words
from mfmaccel.data.medvqa.sample import VQASample
from mfmaccel.finetune.collate import Example

CAPTION_REQUESTS = (
    "Describe the image.",
    "Write a short caption for this image.",
    "What does this image show?",
    "Give a brief report of this image.",
)

INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "modality": (
        "Name the imaging modality.",
        "Which kind of imaging produced this picture?",
        "Tell me how this image was made.",
    ),
    "organ": (
        "Name the organ in this image.",
        "Which anatomy does this picture show?",
        "Tell me the body part that was imaged.",
    ),
    "presence": (
        "Are any lesions visible?",
        "Check this image for lesions.",
        "Does anything abnormal appear here?",
    ),
    "location": (
        "Point out where the lesions are.",
        "In which part of the image do you see lesions?",
        "Give the position of the abnormality.",
    ),
    "count": (
        "Count the lesions.",
        "What is the number of lesions here?",
        "How many abnormal spots can you see?",
    ),
    "tumour": (
        "Do you see a tumour?",
        "Check this scan for a tumour.",
        "Is any tumour visible here?",
    ),
}


SHORT = "Answer with a word or number."


def short_answer(question_type: str, facts: ImageFacts) -> str | None:
    """The closed answer (benchmark vocabulary), or None when it does not apply."""
    quadrants = facts.quadrants
    if question_type == "modality":
        return facts.modality
    if question_type == "organ":
        return facts.organ
    if question_type == "tumour":
        return facts.tumour
    if quadrants is None:
        return None
    if question_type == "presence":
        return "yes" if quadrants else "no"
    if question_type == "location":
        return quadrants[0] if len(quadrants) == 1 else None
    return str(len(quadrants))


def open_answer(question_type: str, facts: ImageFacts) -> str | None:
    """A sentence answering `question_type` about the image, or None when it does not apply."""
    quadrants, count = facts.quadrants, facts.lesion_count
    if question_type == "modality":
        return f"The modality is {facts.modality}."
    if question_type == "organ":
        return None if facts.organ is None else f"It shows the {facts.organ}."
    if question_type == "tumour":
        if facts.tumour is None:
            return None
        return "Yes, there is a tumour." if facts.tumour == "yes" else "No, there is no tumour."
    if quadrants is None:
        return None  # no lesion facts for this source
    if question_type == "presence":
        return "Yes, there is a lesion." if count else "No, there is no lesion."
    if question_type == "location":
        if not quadrants:
            return None
        noun = "lesion is" if count == 1 else "lesions are"
        return f"The {noun} in the {join_words(quadrants)}."
    if question_type == "count":
        return f"There {'is' if count == 1 else 'are'} {count} lesion{'' if count == 1 else 's'}."
    raise ValueError(f"unknown question type {question_type!r}")


def caption_examples(samples: list[CaptionSample], seed: int) -> list[Example]:
    """One caption request per image, phrasing drawn at random (seeded)."""
    rng = np.random.default_rng(seed)
    return [
        Example(i, CAPTION_REQUESTS[int(rng.integers(len(CAPTION_REQUESTS)))], caption(s.facts))
        for i, s in enumerate(samples)
    ]


def instruction_examples(samples: list[CaptionSample], seed: int) -> list[Example]:
    """Every applicable question type of every image (random phrasing, seeded) in open and
    short form, plus a caption request, so the language model learns to talk about all facts."""
    rng = np.random.default_rng(seed)
    examples = []
    for i, sample in enumerate(samples):
        for qtype, phrasings in INSTRUCTIONS.items():
            if qtype == "tumour" and sample.facts.tumour is None:
                continue  # no draw either: medvqa's examples stay what they were
            question = phrasings[int(rng.integers(len(phrasings)))]
            answer = open_answer(qtype, sample.facts)
            if answer is not None:
                examples.append(Example(i, question, answer))
            answer = short_answer(qtype, sample.facts)
            if answer is not None:
                examples.append(Example(i, f"{question} {SHORT}", answer))
        examples.append(Example(i, CAPTION_REQUESTS[int(rng.integers(len(CAPTION_REQUESTS)))],
                                caption(sample.facts)))
    return examples


def vqa_examples(samples: list[VQASample]) -> list[Example]:
    """The closed benchmark question with its exact answer (the evaluation's format)."""
    return [Example(i, s.question, s.answer) for i, s in enumerate(samples)]

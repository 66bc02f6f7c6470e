"""The one record every medical VQA source in mfmaccel produces, so trainers and evaluators
can consume the offline benchmark and user datasets (VQA-RAD, SLAKE, PathVQA) the same way."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

SPLITS: tuple[str, ...] = ("train", "val", "test")
QUESTION_TYPES: tuple[str, ...] = ("modality", "organ", "presence", "location", "count")
QUESTION_TYPES_V2: tuple[str, ...] = ("tumour", "modality", "organ")  # medvqa2 (realbuild.py)


@dataclass
class VQASample:
    """One closed-ended visual question with its image and the candidate answers.

    `answer` is lower-case and canonical and always one of `answer_set`, so an evaluator can
    score a model by picking among `answer_set`. `source_id` names the real source image the
    picture came from, so split hygiene can be checked.
    """

    image: Image.Image
    question: str
    answer: str
    question_type: str
    answer_set: list[str]
    source_id: str
    split: str

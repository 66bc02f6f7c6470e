"""Closed-ended question templates and candidate answers in the style of VQA-RAD and SLAKE.

Answer sets are fixed for the whole benchmark (not per split), so a model is always choosing
among the same candidates and a majority baseline is comparable across splits.
"""

from __future__ import annotations

import numpy as np

MODALITIES: list[str] = [
    "ct", "mri", "ultrasound", "fundus photograph", "histology", "nuclear medicine",
    "phase microscopy",
]
ORGANS: list[str] = ["head", "chest", "abdomen", "eye", "heart", "colon", "lymph node"]
YES_NO: list[str] = ["yes", "no"]
QUADRANTS: list[str] = ["upper left", "upper right", "lower left", "lower right"]
COUNTS: list[str] = ["0", "1", "2", "3"]

ANSWER_SETS: dict[str, list[str]] = {
    "modality": MODALITIES,
    "organ": ORGANS,
    "presence": YES_NO,
    "location": QUADRANTS,
    "count": COUNTS,
}

TEMPLATES: dict[str, tuple[str, ...]] = {
    "modality": (
        "What imaging modality is this?",
        "What modality was used to take this image?",
        "How was this image acquired?",
        "What type of imaging is shown?",
    ),
    "organ": (
        "Which organ is shown?",
        "Which part of the body is shown in this image?",
        "What organ is this image of?",
        "What body region is imaged?",
    ),
    "presence": (
        "Is there a lesion?",
        "Is there an abnormality in this image?",
        "Does this image show a lesion?",
        "Is a lesion present?",
    ),
    "location": (
        "Where is the lesion in the image?",
        "In which quadrant of the image is the lesion?",
        "Which image quadrant contains the abnormality?",
        "Where in the image is the lesion located?",
    ),
    "count": (
        "How many lesions are there?",
        "How many lesions are visible?",
        "How many abnormalities are seen in this image?",
        "How many lesions does this image show?",
    ),
}


# medvqa2 (realbuild.py): real labels only. Its answer sets extend medvqa's with what the new
# images show (x-ray; shoulder, leg, pelvis) and add the tumour question; medvqa's sets and
# templates above are unchanged.
MODALITIES_V2: list[str] = [*MODALITIES, "x-ray"]
ORGANS_V2: list[str] = [*ORGANS, "shoulder", "leg", "pelvis"]
ANSWER_SETS_V2: dict[str, list[str]] = {
    "tumour": YES_NO,
    "modality": MODALITIES_V2,
    "organ": ORGANS_V2,
}
TEMPLATES_V2: dict[str, tuple[str, ...]] = {
    "tumour": (
        "Is there a tumour?",
        "Does this image show a tumour?",
        "Is a tumour present?",
        "Is there a tumour in this scan?",
    ),
    "modality": TEMPLATES["modality"],
    "organ": TEMPLATES["organ"],
}


def ask(question_type: str, rng: np.random.Generator) -> str:
    """A random phrasing of `question_type` (medvqa's types, or medvqa2's "tumour")."""
    options = TEMPLATES.get(question_type) or TEMPLATES_V2[question_type]
    return options[int(rng.integers(0, len(options)))]


def quadrant_of(x: float, y: float, size: int) -> str:
    """Image quadrant (not patient side) of pixel position (x, y) in a size x size image."""
    vertical = "upper" if y < size / 2 else "lower"
    horizontal = "left" if x < size / 2 else "right"
    return f"{vertical} {horizontal}"

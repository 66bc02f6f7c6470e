"""Image-caption pairs for vision-language alignment, written from the benchmark generator's
ground truth (modality, organ, lesions and their quadrants), e.g.
"CT of the head; two lesions, upper left and lower right."

The images are exactly those of `load_medvqa(split, seed, per_source)`, in the same order, and
each caption sample carries its VQA sample, so one generation pass serves every training phase.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from mfmaccel.data.medvqa.build import GeneratedSample, generate_split
from mfmaccel.data.medvqa.questions import QUADRANTS
from mfmaccel.data.medvqa.realbuild import (
    BR35H_POOL,
    Picture,
    PlannedSample,
    load_medvqa2,
    pictures_for_split,
    split_plan,
)
from mfmaccel.data.medvqa.sample import VQASample
from mfmaccel.data.medvqa.sources import SOURCE_BY_ID

MODALITY_NAMES = {
    "ct": "CT", "mri": "MRI", "ultrasound": "Ultrasound", "fundus photograph": "Fundus photograph",
    "histology": "Histology", "nuclear medicine": "Nuclear medicine scan",
    "phase microscopy": "Phase microscopy", "x-ray": "X-ray",
}
MAP_CELL = 4  # pixels per lesion_map cell
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five")


@dataclass
class ImageFacts:
    """What is known to be true of one benchmark image.

    `quadrants` lists the lesions' image quadrants (one entry per lesion, canonical order),
    `centres` their (x, y) pixel centres in the same order, and `lesion_map` the fraction of
    each 4x4-pixel cell covered by a lesion core (56 x 56 for a 224 x 224 image); all three are
    None for sources on which no lesion is ever drawn (nothing may be said about lesions there).
    `tumour` ("yes" / "no") is a real label (medvqa2's Br35H scans), None where none is known.
    """

    modality: str
    organ: str | None
    quadrants: list[str] | None
    centres: list[tuple[float, float]] | None = None
    lesion_map: np.ndarray | None = None
    tumour: str | None = None

    @property
    def lesion_count(self) -> int | None:
        return None if self.quadrants is None else len(self.quadrants)


@dataclass
class CaptionSample:
    image: Image.Image
    caption: str
    facts: ImageFacts
    sample: VQASample  # the benchmark question drawn for this image


def image_facts(generated: GeneratedSample) -> ImageFacts:
    spec = SOURCE_BY_ID[generated.sample.source_id]
    if spec.lesion_style is None:
        return ImageFacts(spec.modality, spec.organ, None)
    lesions = sorted(generated.lesions, key=lambda lesion: QUADRANTS.index(lesion.quadrant))
    return ImageFacts(
        spec.modality, spec.organ, [lesion.quadrant for lesion in lesions],
        [(lesion.cx, lesion.cy) for lesion in lesions], _coverage(lesions, generated.anatomy.shape),
    )


def _coverage(lesions: list, shape: tuple[int, int], cell: int = MAP_CELL) -> np.ndarray:
    """Fraction of each `cell` x `cell` block covered by a lesion core."""
    union = np.zeros(shape, dtype=np.float32)
    for lesion in lesions:
        union[lesion.core] = 1.0
    rows, cols = shape[0] // cell, shape[1] // cell
    return union[: rows * cell, : cols * cell].reshape(rows, cell, cols, cell).mean(axis=(1, 3))


def join_words(items: list[str]) -> str:
    """["a"] -> "a"; ["a", "b", "c"] -> "a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def describe_lesions(quadrants: list[str]) -> str:
    """"no lesion", "one lesion, upper left", "two lesions, upper left and lower right"."""
    if not quadrants:
        return "no lesion"
    noun = "lesion" if len(quadrants) == 1 else "lesions"
    return f"{NUMBER_WORDS[len(quadrants)]} {noun}, {join_words(quadrants)}"


def caption(facts: ImageFacts) -> str:
    text = MODALITY_NAMES[facts.modality]
    if facts.organ is not None:
        text += f" of the {facts.organ}"
    if facts.quadrants is not None:
        text += f"; {describe_lesions(facts.quadrants)}"
    if facts.tumour is not None:
        text += "; a tumour" if facts.tumour == "yes" else "; no tumour"
    return text + "."


def planned_facts(planned: PlannedSample, pictures: dict[str, Picture]) -> ImageFacts:
    """What is known of a medvqa2 sample's image: its picture's modality and organ; a whole
    Br35H scan also its tumour label (a view of one may have cropped the tumour away)."""
    if planned.question_type == "tumour":
        return ImageFacts("mri", "head", None, tumour=planned.answer)
    picture = pictures.get(planned.picture, pictures[BR35H_POOL])  # else a Br35H scan's view
    return ImageFacts(picture.modality, picture.organ, None)


def load_medcaptions2(split: str, *, seed: int = 0, limit: int | None = None
                      ) -> list[CaptionSample]:
    """Captioned images of a medvqa2 split (same images and order as `load_medvqa2`)."""
    samples = load_medvqa2(split, seed=seed, limit=limit)
    pictures = {p.picture_id: p for p in pictures_for_split(split)}
    captioned = []
    for planned, sample in zip(split_plan(split, seed), samples, strict=False):
        facts = planned_facts(planned, pictures)
        captioned.append(CaptionSample(sample.image, caption(facts), facts, sample))
    return captioned


def load_medcaptions(
    split: str, seed: int = 0, per_source: int | None = None
) -> list[CaptionSample]:
    """Captioned images of a benchmark split (same images and order as `load_medvqa`)."""
    samples = []
    for generated in generate_split(split, seed=seed, per_source=per_source):
        facts = image_facts(generated)
        samples.append(CaptionSample(generated.sample.image, caption(facts), facts,
                                     generated.sample))
    return samples

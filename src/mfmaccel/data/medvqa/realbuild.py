"""medvqa2: closed medical questions whose answers are real labels, split by patient image.

Three question types. `tumour`: one per Br35H brain MRI of the split, answered by the
dataset's own label, on the whole scan (no crop could cut the tumour away). `modality` and
`organ`: from the DICOM headers of pydicom-data (dicomset.py) and the facts of the current
medvqa sources (sources.py), asked on random views (crop, harmless flip, intensity jitter) of
each image, so one image gives many samples; Br35H scans are asked them too ("mri", "head").
Every answer class of a type gets the same number of samples in a split (spread over the
images that show it), so always answering the most common train answer scores 1 / (number of
classes) on test, and 0.5 on tumour.

Every distinct image is in exactly one split: Br35H by near-duplicate group (br35h.py), the
DICOM files by image (all encodings together), the current sources by `SPLIT_OF_SOURCE`. The
synthetic lesion questions of medvqa (presence / location / count) are left out: their labels
are painted on, and medvqa already has them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image
from scipy import ndimage

from mfmaccel.data.medvqa import br35h, dicomset
from mfmaccel.data.medvqa.build import PlannedAnswer
from mfmaccel.data.medvqa.questions import ANSWER_SETS_V2, ask
from mfmaccel.data.medvqa.sample import SPLITS, VQASample
from mfmaccel.data.medvqa.sources import SOURCE_BY_ID, source_images, source_mask
from mfmaccel.data.medvqa.views import VIEW_SIZE, jitter, make_view, to_rgb_image
from mfmaccel.errors import UserInputError

# Each current medvqa source in one medvqa2 split, one of those its SourceSpec allows. The
# three single-image modalities (histology, nuclear medicine, phase microscopy) are train only:
# a test image of theirs would be a training image again.
SPLIT_OF_SOURCE: dict[str, str] = {
    "pydicom/CT_small.dcm": "train",
    "skimage/shepp_logan_phantom": "train",
    "pydicom/693_J2KI.dcm": "val",
    "pydicom/J2K_pixelrep_mismatch.dcm": "test",
    "pydicom/examples_overlay.dcm": "train",
    "pydicom/MR_small.dcm": "val",
    "pydicom/examples_ybr_color.dcm": "train",
    "pydicom/examples_jpeg2k.dcm": "val",
    "skimage/retina": "train",
    "skimage/microaneurysms": "test",
    "skimage/immunohistochemistry": "train",
    "pydicom/JPEG2000.dcm": "train",
    "skimage/cell": "train",
}
PER_CLASS: dict[str, int] = {"train": 150, "val": 30, "test": 40}  # samples per answer class
BR35H_POOL = "br35h"  # the picture id standing for "a random Br35H scan of the split"
BR35H_VIEW_SIDE = 256  # Br35H scans are squared to this before a view is cropped
BR35H_ZOOM, BR35H_FLIPS = (0.7, 1.0), "h"  # left-right flips are in the data set already
BODY_FRACTION = 0.4  # of the Otsu level: everything brighter counts as anatomy (as sources.py)
_VIEW, _TEXT, _ORDER, _PICK = 0, 1, 2, 3  # seed-sequence tags for independent random streams


@dataclass(frozen=True)
class Picture:
    """An image that modality / organ questions are asked on, through random views."""

    picture_id: str
    modality: str
    organ: str | None
    zoom: tuple[float, float] = (0.7, 1.0)
    flips: str = ""


@dataclass(frozen=True)
class PlannedSample:
    """A sample known before its image is made: what is asked, the answer, and from what.
    `picture` is a Picture id, or a Br35H file name; `index` numbers the samples of one
    (question type, picture) for seeding."""

    question_type: str
    answer: str
    source_id: str
    picture: str
    index: int


def _seeds(seed: int, split: str, key: str, index: int, tag: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, SPLITS.index(split), zlib.crc32(key.encode()), index,
                                   tag])


def pictures_for_split(split: str) -> list[Picture]:
    """The current sources, new DICOM images and (standing for all its scans) Br35H of a
    split, in a fixed order."""
    pictures = [Picture(sid, spec.modality, spec.organ, spec.zoom, spec.flips)
                for sid, spec in SOURCE_BY_ID.items() if SPLIT_OF_SOURCE[sid] == split]
    pictures += [Picture(image.image_id, image.modality, image.organ, image.zoom, image.flips)
                 for image in dicomset.images_for_split(split)]
    return [*pictures, Picture(BR35H_POOL, "mri", "head", BR35H_ZOOM, BR35H_FLIPS)]


def _view_plan(split: str, seed: int) -> list[PlannedSample]:
    """PER_CLASS[split] samples per answer of modality and of organ, dealt round-robin over
    the pictures that show it; a Br35H sample picks one scan of the split at random."""
    scans = br35h.split_images(split)
    plan = []
    for qtype in ("modality", "organ"):
        by_answer: dict[str, list[Picture]] = {}
        for picture in pictures_for_split(split):
            answer = picture.modality if qtype == "modality" else picture.organ
            if answer is not None:
                by_answer.setdefault(answer, []).append(picture)
        for answer, pictures in sorted(by_answer.items()):
            for k in range(PER_CLASS[split]):
                picture = pictures[k % len(pictures)]
                index = k // len(pictures)
                name, source_id = picture.picture_id, picture.picture_id
                if name == BR35H_POOL:
                    key = f"{qtype}:{BR35H_POOL}"
                    rng = np.random.default_rng(_seeds(seed, split, key, index, _PICK))
                    group, scan = scans[int(rng.integers(0, len(scans)))]
                    name, source_id = scan.name, br35h.group_id(group)
                plan.append(PlannedSample(qtype, answer, source_id, name, index))
    return plan


def _tumour_plan(split: str) -> list[PlannedSample]:
    return [PlannedSample("tumour", scan.label, br35h.group_id(group), scan.name, 0)
            for group, scan in br35h.split_images(split)]


@cache
def split_plan(split: str, seed: int = 0) -> tuple[PlannedSample, ...]:
    """Every sample of a split, in the split's seeded shuffle (cached: images not made)."""
    plan = _tumour_plan(split) + _view_plan(split, seed)
    order = np.random.default_rng(_seeds(seed, split, "", 0, _ORDER)).permutation(len(plan))
    return tuple(plan[i] for i in order)


def anatomy_mask(gray: np.ndarray) -> np.ndarray:
    """Foreground of a grayscale image: smoothed pixels brighter than BODY_FRACTION of the Otsu
    level, holes filled (the rule sources.py uses), so a crop shows enough anatomy."""
    from skimage.filters import threshold_otsu

    smooth = ndimage.gaussian_filter(gray, sigma=max(1.0, 0.01 * min(gray.shape)))
    mask = smooth > BODY_FRACTION * threshold_otsu(smooth)
    mask = ndimage.binary_fill_holes(ndimage.binary_opening(mask, iterations=2))
    return mask if mask.mean() > 0.05 else np.ones_like(mask)


def _frames_and_mask(pixels: np.ndarray) -> tuple[tuple[Image.Image, ...], np.ndarray]:
    """(one PIL frame: "RGB" for colour, "F" for grayscale; anatomy mask). Colour images here
    are ultrasound sectors, all tissue, so their mask is everything."""
    if pixels.shape[-1] == 3:
        frame = Image.fromarray(np.round(pixels * 255).astype(np.uint8))
        return (frame,), np.ones(pixels.shape[:2], dtype=bool)
    gray = np.ascontiguousarray(pixels[..., 0], dtype=np.float32)
    return (Image.fromarray(gray),), anatomy_mask(gray)


@cache
def _dicom_frames(image_id: str) -> tuple[tuple[Image.Image, ...], np.ndarray]:
    return _frames_and_mask(dicomset.dicom_pixels(image_id))


def _picture_frames(planned: PlannedSample) -> tuple[tuple[Image.Image, ...], np.ndarray]:
    if planned.picture in SOURCE_BY_ID:
        return source_images(planned.picture), source_mask(planned.picture)
    if planned.picture in dicomset.DICOM_BY_ID:
        return _dicom_frames(planned.picture)
    scan = br35h.square_image(planned.picture, BR35H_VIEW_SIDE).convert("L")
    return _frames_and_mask(np.asarray(scan, dtype=np.float32)[..., None] / 255.0)


def _picture_view(planned: PlannedSample) -> tuple[tuple[float, float], str]:
    """(zoom, flips) of the picture a view sample is made from."""
    if planned.picture in SOURCE_BY_ID:
        spec = SOURCE_BY_ID[planned.picture]
        return spec.zoom, spec.flips
    if planned.picture in dicomset.DICOM_BY_ID:
        image = dicomset.DICOM_BY_ID[planned.picture]
        return image.zoom, image.flips
    return BR35H_ZOOM, BR35H_FLIPS


def make_sample(planned: PlannedSample, split: str, seed: int) -> VQASample:
    """The image and phrasing of one planned sample (pixel-identical for the same seed)."""
    key = f"{planned.question_type}:{planned.picture}"
    rng_text = np.random.default_rng(_seeds(seed, split, key, planned.index, _TEXT))
    if planned.question_type == "tumour":
        image = br35h.square_image(planned.picture, VIEW_SIZE)
    else:
        rng_view = np.random.default_rng(_seeds(seed, split, key, planned.index, _VIEW))
        frames, mask = _picture_frames(planned)
        zoom, flips = _picture_view(planned)
        view = make_view(frames, mask, zoom, flips, rng_view)
        image = to_rgb_image(jitter(view.pixels, rng_view))
    return VQASample(
        image=image,
        question=ask(planned.question_type, rng_text),
        answer=planned.answer,
        question_type=planned.question_type,
        answer_set=list(ANSWER_SETS_V2[planned.question_type]),
        source_id=planned.source_id,
        split=split,
    )


def _check(split: str, seed: int, limit: int | None) -> None:
    if split not in SPLITS:
        raise UserInputError(f"unknown medvqa2 split {split!r}: use one of {', '.join(SPLITS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserInputError(f"medvqa2 seed must be a non-negative integer, got {seed!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UserInputError(f"limit must be a positive integer or None, got {limit!r}")


def planned_answers_v2(split: str, *, seed: int = 0) -> list[PlannedAnswer]:
    """The question type and answer of every sample of a split, without making an image
    (the train set of `majority_baseline`)."""
    _check(split, seed, None)
    return [PlannedAnswer(p.question_type, p.answer) for p in split_plan(split, seed)]


def load_medvqa2(split: str, *, seed: int = 0, limit: int | None = None) -> list[VQASample]:
    """The `split` of medvqa2 (same split + seed -> the same samples, pixel for pixel), in a
    seeded shuffle; with `limit`, its first `limit` samples, the others' images never made.
    `seed` varies the views, phrasings and order, never which images are in which split."""
    _check(split, seed, limit)
    return [make_sample(planned, split, seed) for planned in split_plan(split, seed)[:limit]]

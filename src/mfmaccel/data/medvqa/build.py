"""Build the offline medical VQA benchmark splits, deterministically, from the real sources.

Per source, the question types and their answers are scheduled first so that answers are
balanced (presence 50/50, count and location uniform); then each sample's view and lesions are
generated to match its scheduled answer. Every random draw comes from a numpy Generator seeded
from (seed, split, source, index), so a split is pixel-identical across runs (pinned libraries).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from mfmaccel.data.medvqa.lesions import Lesion, paint, plan_lesions
from mfmaccel.data.medvqa.questions import ANSWER_SETS, ask
from mfmaccel.data.medvqa.sample import QUESTION_TYPES, SPLITS, VQASample
from mfmaccel.data.medvqa.sources import (
    SOURCE_BY_ID,
    SourceSpec,
    source_images,
    source_mask,
    sources_for_split,
)
from mfmaccel.data.medvqa.views import jitter, make_view, to_rgb_image
from mfmaccel.errors import UserInputError

DEFAULT_SIZES: dict[str, int] = {"train": 2000, "val": 300, "test": 500}
MAX_ATTEMPTS = 40  # fresh crops tried before giving up on placing the requested lesions
_SAMPLE, _SCHEDULE, _ORDER = 0, 1, 2  # seed-sequence tags for independent random streams


@dataclass
class GeneratedSample:
    """A benchmark sample plus the ground truth of the lesions drawn into its image."""

    sample: VQASample
    lesions: list[Lesion]
    anatomy: np.ndarray  # bool (224, 224): the view's foreground mask lesions were placed in


def _seeds(seed: int, split: str, source_id: str, index: int, tag: int) -> np.random.SeedSequence:
    source_code = zlib.crc32(source_id.encode())  # stable across processes, unlike hash()
    return np.random.SeedSequence([seed, SPLITS.index(split), source_code, index, tag])


def question_types(spec: SourceSpec) -> list[str]:
    """The question types a source supports."""
    types = ["modality"]
    if spec.organ is not None:
        types.append("organ")
    if spec.lesion_style is not None:
        types += ["presence", "location", "count"]
    return types


def _fixed_answer(spec: SourceSpec, question_type: str) -> str | None:
    return {"modality": spec.modality, "organ": spec.organ}.get(question_type)


def samples_for(spec: SourceSpec, per_source: int) -> int:
    """Samples made from a source: `per_source` for one that supports all question types,
    proportionally fewer for one that supports fewer (a modality-only source would otherwise
    flood the split with one easy question)."""
    return max(1, round(per_source * len(question_types(spec)) / len(QUESTION_TYPES)))


@lru_cache(maxsize=256)
def question_plan(source_id: str, split: str, *, seed: int, per_source: int) -> tuple:
    """((question_type, answer), ...) for one source: types balanced, answers balanced."""
    spec = SOURCE_BY_ID[source_id]
    rng = np.random.default_rng(_seeds(seed, split, source_id, 0, _SCHEDULE))
    types = question_types(spec)
    schedule = _balanced(types, samples_for(spec, per_source), rng)
    answers: dict[str, list[str]] = {}
    for qtype in types:
        wanted = schedule.count(qtype)
        fixed = _fixed_answer(spec, qtype)
        answers[qtype] = [fixed] * wanted if fixed else _balanced(ANSWER_SETS[qtype], wanted, rng)
    return tuple((qtype, answers[qtype].pop()) for qtype in schedule)


def _balanced(options: list[str], count: int, rng: np.random.Generator) -> list[str]:
    """`count` items cycling through `options` from a random start, in random order, so no
    option is systematically favoured when `count` is not a multiple of len(options)."""
    start = int(rng.integers(0, len(options)))
    items = [options[(start + i) % len(options)] for i in range(count)]
    return [items[i] for i in rng.permutation(count)]


def _lesion_request(
    spec: SourceSpec, qtype: str, answer: str, rng: np.random.Generator
) -> tuple[int, str | None]:
    """How many lesions the image needs, and in which quadrant, for this question's answer."""
    if spec.lesion_style is None:
        return 0, None
    if qtype == "presence":
        return (int(rng.integers(1, 4)) if answer == "yes" else 0), None
    if qtype == "location":
        return 1, answer
    if qtype == "count":
        return int(answer), None
    return int(rng.integers(0, 4)), None  # modality / organ: lesions as background variety


def generate_sample(
    source_id: str, split: str, *, seed: int, index: int, per_source: int,
    paint_lesions: bool = True,
) -> GeneratedSample:
    """Sample `index` of `source_id` in `split`; `paint_lesions=False` gives the same view
    (same crop, jitter and noise) without the lesions, for checking ground truth."""
    spec = SOURCE_BY_ID[source_id]
    qtype, answer = question_plan(source_id, split, seed=seed, per_source=per_source)[index]
    streams = _seeds(seed, split, source_id, index, _SAMPLE).spawn(3)
    rng_view, rng_lesion, rng_text = (np.random.default_rng(s) for s in streams)
    count, quadrant = _lesion_request(spec, qtype, answer, rng_lesion)
    frames, mask = source_images(source_id), source_mask(source_id)
    for _ in range(MAX_ATTEMPTS):
        view = make_view(frames, mask, spec.zoom, spec.flips, rng_view)
        plans = [] if count == 0 else plan_lesions(
            view.pixels, view.mask, count=count, quadrant=quadrant,
            style=spec.lesion_style or "", rng=rng_lesion
        )
        if plans is not None:
            break
    else:
        raise RuntimeError(f"could not place {count} lesion(s) on {source_id}, sample {index}")
    pixels = paint(view.pixels, plans) if paint_lesions else view.pixels
    image = to_rgb_image(jitter(pixels, rng_view))
    sample = VQASample(
        image=image,
        question=ask(qtype, rng_text),
        answer=answer,
        question_type=qtype,
        answer_set=list(ANSWER_SETS[qtype]),
        source_id=source_id,
        split=split,
    )
    return GeneratedSample(sample, [p.lesion for p in plans], view.mask)


def default_per_source(split: str) -> int:
    """The `per_source` that gives the split roughly its DEFAULT_SIZES total."""
    weight = sum(len(question_types(s)) for s in sources_for_split(split)) / len(QUESTION_TYPES)
    return math.ceil(DEFAULT_SIZES[split] / weight)


def _check_args(split: str, seed: int, per_source: int | None) -> None:
    if split not in SPLITS:
        raise UserInputError(f"unknown medvqa split {split!r}: use one of {', '.join(SPLITS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserInputError(f"medvqa seed must be a non-negative integer, got {seed!r}")
    if per_source is not None and (not isinstance(per_source, int) or per_source < 1):
        raise UserInputError(f"per_source must be a positive integer or None, got {per_source!r}")


def split_plan(split: str, *, seed: int = 0, per_source: int | None = None
               ) -> list[tuple[str, int]]:
    """(source_id, index) of every sample of a split, in the split's seeded shuffle: which
    samples come first is known before any image is made."""
    _check_args(split, seed, per_source)
    per_source = per_source or default_per_source(split)
    pairs = [(spec.source_id, index) for spec in sources_for_split(split)
             for index in range(samples_for(spec, per_source))]
    order = np.random.default_rng(_seeds(seed, split, "", 0, _ORDER)).permutation(len(pairs))
    return [pairs[i] for i in order]


def generate_split(split: str, *, seed: int = 0, per_source: int | None = None,
                   limit: int | None = None) -> list[GeneratedSample]:
    """Every sample of a split (the first `limit` only, the rest never made) with its ground
    truth, in the split's seeded shuffle (the order `load_medvqa` returns); captions and
    instruction data are made from these."""
    _check_limit(limit)
    plan = split_plan(split, seed=seed, per_source=per_source)[:limit]
    per_source = per_source or default_per_source(split)
    return [generate_sample(source_id, split, seed=seed, index=index, per_source=per_source)
            for source_id, index in plan]


class PlannedAnswer(NamedTuple):
    """A sample's question type and answer, known from the plan alone."""

    question_type: str
    answer: str


def planned_answers(split: str, *, seed: int = 0, per_source: int | None = None
                    ) -> list[PlannedAnswer]:
    """The question type and answer of every sample of a split, without making its image
    (enough for `majority_baseline`)."""
    plan = split_plan(split, seed=seed, per_source=per_source)
    per_source = per_source or default_per_source(split)
    return [PlannedAnswer(*question_plan(source_id, split, seed=seed, per_source=per_source)[index])
            for source_id, index in plan]


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UserInputError(f"limit must be a positive integer or None, got {limit!r}")


def load_medvqa(split: str, *, seed: int = 0, per_source: int | None = None,
                limit: int | None = None) -> list[VQASample]:
    """The `split` of the offline medical VQA benchmark (same split + seed -> same samples).

    `per_source` samples are made from each real source image allowed in the split that
    supports all five question types, proportionally fewer from one that supports fewer (see
    `samples_for`); the default gives ~2000 train / ~300 val / ~500 test samples. The list is
    returned in a seeded shuffle; with `limit`, its first `limit` samples, the others' images
    never made.
    """
    generated = generate_split(split, seed=seed, per_source=per_source, limit=limit)
    return [one.sample for one in generated]

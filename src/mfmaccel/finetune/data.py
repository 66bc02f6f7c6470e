"""Everything the phases train and validate on, built once: images become pixel tensors a
single time and every phase's examples point into them.

Phases 1 and 2 always use the offline benchmark's train images (their captions and facts come
from the generator). Phase 3 uses the benchmark's train questions, or a user's VQA-RAD / SLAKE
-format folder when one is given (its train split; val split, else test, for validation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mfmaccel.data.medvqa import load_vqa_folder
from mfmaccel.data.medvqa.captions import CaptionSample, load_medcaptions, load_medcaptions2
from mfmaccel.data.medvqa.sample import VQASample
from mfmaccel.errors import UserInputError
from mfmaccel.finetune.collate import Example
from mfmaccel.finetune.config import FinetuneConfig
from mfmaccel.finetune.instructions import caption_examples, instruction_examples, vqa_examples


@dataclass
class PhaseData:
    pixels: torch.Tensor  # (images, 3, H, W), as the model's processor makes them
    examples: list[Example]


@dataclass
class FinetuneData:
    captions: list[CaptionSample]  # benchmark train images with their facts
    pixels: torch.Tensor  # pixels of `captions`
    alignment: PhaseData
    instruction: PhaseData
    vqa: PhaseData
    val: list[VQASample]  # the fixed validation subset
    val_captions: list[CaptionSample] = field(default_factory=list)  # for the tower probe
    val_pixels: torch.Tensor | None = None
    description: dict = field(default_factory=dict)


def pixel_tensor(processor, images: list, chunk: int = 64) -> torch.Tensor:
    """Pixel values of `images` through the model's own image processor."""
    parts = [
        processor.image_processor(images=images[i:i + chunk], return_tensors="pt")["pixel_values"]
        for i in range(0, len(images), chunk)
    ]
    return torch.cat(parts)


def val_subset(samples: list[VQASample], count: int) -> list[VQASample]:
    """`count` samples taken round-robin over question types (in list order), so every type
    is represented; deterministic for a given list."""
    by_type: dict[str, list[VQASample]] = {}
    for sample in samples:
        by_type.setdefault(sample.question_type, []).append(sample)
    queues = [list(reversed(group)) for _, group in sorted(by_type.items())]
    chosen: list[VQASample] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop())
    return chosen


def user_vqa_splits(folder: str) -> tuple[list[VQASample], list[VQASample], str]:
    """(train, validation, which split validates) of a user's VQA folder."""
    samples = load_vqa_folder(folder)
    train = [s for s in samples if s.split == "train"]
    if not train:
        raise UserInputError(
            f"{folder} has no train-split questions to fine-tune on; mark records with a "
            "'split' key, VQA-RAD's phrase_type, or a train.json file name"
        )
    for split in ("val", "test"):
        held_out = [s for s in samples if s.split == split]
        if held_out:
            return train, held_out, split
    return train, train, "train (no held-out split)"


def prepare_data(config: FinetuneConfig, processor) -> FinetuneData:
    seed, name = config.seed, config.benchmark
    captions = benchmark_captions(config, "train")
    pixels = pixel_tensor(processor, [c.image for c in captions])
    description = {"phases_1_2": f"{name} train split (seed {seed}): {len(captions)} images"}
    if config.data is not None:
        train, held_out, val_split = user_vqa_splits(config.data)
        vqa = PhaseData(pixel_tensor(processor, [s.image for s in train]), vqa_examples(train))
        val, val_captions, val_pixels = val_subset(held_out, config.val_samples), [], None
        description["phase_3"] = f"{config.data}: {len(train)} train questions"
        description["val"] = f"{config.data}: {len(val)} of its {val_split} split"
    else:
        vqa = PhaseData(pixels, vqa_examples([c.sample for c in captions]))
        val_captions = benchmark_captions(config, "val")
        val_images = [c.image for c in val_captions]  # the warm-up's probe reads them
        val_pixels = pixel_tensor(processor, val_images) if config.warmup.steps else None
        val = val_subset([c.sample for c in val_captions], config.val_samples)
        description["phase_3"] = f"{name} train split: {len(captions)} closed questions"
        description["val"] = f"{name} val split (seed {seed}): fixed subset of {len(val)}"
    return FinetuneData(
        captions=captions, pixels=pixels,
        alignment=PhaseData(pixels, caption_examples(captions, seed)),
        instruction=PhaseData(pixels, instruction_examples(captions, seed)),
        vqa=vqa, val=val, val_captions=val_captions, val_pixels=val_pixels,
        description=description,
    )


def benchmark_captions(config: FinetuneConfig, split: str) -> list[CaptionSample]:
    """A split of the offline benchmark the config names, captioned."""
    if config.benchmark == "medvqa2":
        return load_medcaptions2(split, seed=config.seed, limit=config.train_limit)
    per_source = config.train_per_source if split == "train" else val_per_source(config)
    return load_medcaptions(split, seed=config.seed, per_source=per_source)


def val_per_source(config: FinetuneConfig) -> int | None:
    """Tests shrink the train split; keep the val split as small then."""
    return None if config.train_per_source is None else max(1, config.train_per_source // 4)

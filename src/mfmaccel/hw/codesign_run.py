"""A co-design from a model's name: what `mfmaccel hw codesign` and benchmarks/codesign.py
call. Bad settings are refused before the model loads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from mfmaccel.compress.probe_jobs import ProbeSource
from mfmaccel.errors import UserInputError
from mfmaccel.hw.codesign import Codesign, check_settings, codesign
from mfmaccel.hw.codesign_subject import (
    Subject,
    checked_tower,
    subject_kind,
    text_subject,
    tower_subject,
)
from mfmaccel.hw.dse import Constraints, DesignSpace
from mfmaccel.models import load_model
from mfmaccel.models.loader import model_kind
from mfmaccel.models.record import LoadedModel
from mfmaccel.models.source import ModelSource
from mfmaccel.parallel import IN_PROCESS, Executor
from mfmaccel.progress import Steps


def codesign_for_spec(spec: str, space: DesignSpace, *, bits: Sequence[int] = (2, 3, 4, 8),
                      seq_len: int = 128, calib_tokens: int = 1024, tokens: int = 1024,
                      calibration: int = 32, images: int = 32, tier: str = "block",
                      steps: int = 12, checks: int = 3, executor: Executor = IN_PROCESS,
                      constraints: Constraints | None = None,
                      progress: Steps | None = None) -> Codesign:
    """Co-design `spec` (`subject_for_spec` says on what) over `space`."""
    check_settings(bits, steps=steps, checks=checks, tier=tier)
    subject = subject_for_spec(spec, seq_len=seq_len, calib_tokens=calib_tokens, tokens=tokens,
                               calibration=calibration, images=images)
    return codesign(subject, space, bits=bits, tier=tier, steps=steps, checks=checks,
                    executor=executor, constraints=constraints, progress=progress)


def subject_for_spec(spec: str, *, seq_len: int = 128, calib_tokens: int = 1024,
                     tokens: int = 1024, calibration: int = 32, images: int = 32) -> Subject:
    """A text model measured on `calib_tokens` train tokens (checked on `tokens` test
    tokens), priced on a `seq_len`-token pass, its sensitivity probes free to run on workers
    that load `spec`; a vision model or a VLM's tower measured on `calibration` train images of
    the benchmark it was adapted on (medvqa2 when none is named), checked on `images` test
    images, priced on one image, its probes kept in this process."""
    kind = subject_kind(model_kind(spec), spec)
    counts = {"--calib-tokens": calib_tokens, "--tokens": tokens, "--calibration": calibration,
              "--images": images}
    for flag, value in counts.items():
        least = 2 if "tokens" in flag else 1
        if value < least:
            raise UserInputError(f"{flag} must be at least {least}, got {value}")
    model = load_model(spec)
    if kind == "text":
        subject = text_subject(model, seq_len=seq_len, calib_tokens=calib_tokens, tokens=tokens)
        return replace(subject, source=ProbeSource(ModelSource(spec)))
    checked_tower(model)  # before minutes of image making
    return tower_subject(model, benchmark_pixels(model, "train", calibration),
                         benchmark_pixels(model, "test", images))


def benchmark_pixels(model: LoadedModel, split: str, count: int) -> torch.Tensor:
    """Pixel values of the first `count` images of `split` of the benchmark the model was
    adapted on (medvqa2 when it names none), through the model's own image processor."""
    from mfmaccel.data.medvqa import load_benchmark

    samples = load_benchmark(model.meta.get("benchmark", "medvqa2"), split, limit=count)
    processor = getattr(model.processor, "image_processor", model.processor)
    return processor(images=[s.image for s in samples], return_tensors="pt")["pixel_values"]

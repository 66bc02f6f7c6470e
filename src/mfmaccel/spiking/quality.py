"""How a spiking encoder compares with its integer program and with float, on real text: bit
equality once it settles, the sentence embeddings' cosine to float after each of a few step
counts (the rate-coded approximation), spikes, and ACs against the integer program's MACs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intexec.quality import (
    Progress,
    corpus_sentences,
    mean_pooled,
    reported,
    sentence_batches,
)
from mfmaccel.models import load_model
from mfmaccel.models.loader import model_kind
from mfmaccel.models.record import ENCODER, LoadedModel
from mfmaccel.progress import Steps
from mfmaccel.progress import step as progress_step
from mfmaccel.records import Record
from mfmaccel.spiking.bert import SpikingBert, program_macs


@dataclass
class SpikingAgreement(Record):
    model: str
    sentences: int
    calibration_sentences: int
    levels: int | None  # unit spikes a neuron may fire in one step (None: any)
    max_steps: int
    settled: int  # sentences' batches that settled within max_steps
    batches: int
    settle_steps: list[int | None]  # per batch: the first silent step
    bit_exact: bool | None  # every settled batch equals the integer program (None: none settled)
    integer_cosine: float  # mean cosine of the integer program's embeddings to float
    cosine_at: dict[int, float]  # steps -> mean cosine of the spiking embeddings to float
    min_cosine_at: dict[int, float]
    spike_rate: float  # unit spikes per neuron per step, over every batch's steps
    accumulates: int  # ACs of every batch's steps
    macs: int  # the integer program's multiply-accumulates on the same sentences
    extra: dict = field(default_factory=dict)


def parse_steps(text: str) -> list[int]:
    """"8,16,32" -> [8, 16, 32]; anything else is refused in one line."""
    try:
        chosen = sorted({int(piece) for piece in text.split(",") if piece.strip()})
    except ValueError:
        raise UserInputError(f"--steps {text!r}: give step counts separated by commas, "
                             "e.g. 8,16,32") from None
    if not chosen or chosen[0] < 1:
        raise UserInputError(f"--steps {text!r}: every step count must be at least 1, "
                             "e.g. 8,16,32")
    return chosen


def spiking_for_spec(spec: str, *, levels: int | None = 1, steps: Sequence[int] = (8, 64),
                     max_steps: int = 1024, sentences: int = 16, calibration: int = 64,
                     progress: Steps | None = None) -> SpikingAgreement:
    """`spiking_agreement` for a model named by spec, its settings checked before it loads."""
    for flag, value in {"--max-steps": max_steps, "--sentences": sentences,
                        "--calibration": calibration}.items():
        if value < 1:
            raise UserInputError(f"{flag} must be at least 1, got {value}")
    if levels is not None and levels < 1:
        raise UserInputError(f"--levels must be at least 1 (0: any number), got {levels}")
    if model_kind(spec) != ENCODER:
        raise UserInputError(f"{spec} is not an encoder; spiking conversion covers BERT "
                             "encoders so far, e.g. minilm-l6")
    return spiking_agreement(load_model(spec), levels=levels, sentences=sentences,
                             calibration=calibration, steps=steps, max_steps=max_steps,
                             calibration_progress=progress_step(progress, "calibration"),
                             progress=progress_step(progress, "spiking runs"))


@torch.inference_mode()
def spiking_agreement(model: LoadedModel, *, levels: int | None = 1, sentences: int = 16,
                      calibration: int = 64, steps: Sequence[int] = (8, 16, 32, 64, 128, 256),
                      max_steps: int = 1024, max_length: int = 64, batch_size: int = 8,
                      calibration_progress: Progress = None,
                      progress: Progress = None) -> SpikingAgreement:
    """The spiking program of `model`'s static-scale integer program on the corpus's test
    half (calibrated on its train half), run until it settles or `max_steps`."""
    from mfmaccel.hw.intexec.bert import convert_bert

    if model.kind != ENCODER:
        raise UserInputError(f"{model.name} is not an encoder; spiking conversion covers BERT "
                             "encoders so far, e.g. minilm-l6")
    program = convert_bert(model.module, reported(
        sentence_batches(model.tokenizer, corpus_sentences("train", calibration)),
        calibration_progress), per_token=False)
    spiking = SpikingBert(program, levels)
    wanted = sorted({s for s in steps if s <= max_steps})
    cosines: dict[int, list[torch.Tensor]] = {s: [] for s in wanted}
    integer, settle, exact = [], [], True
    fired = neurons_steps = accumulates = macs = 0
    batches = sentence_batches(model.tokenizer, corpus_sentences("test", sentences),
                               size=batch_size, max_length=max_length)
    for batch in reported(batches, progress):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        reference = mean_pooled(model.module(**batch).last_hidden_state.double(), mask)
        expected = program(ids, mask)
        integer.append(_cosine(reference, expected, mask, program.scale_out))
        settled_at, count = None, 0
        for count, step in enumerate(spiking.steps(ids, mask), 1):
            fired += sum(step.fired.values())
            neurons_steps += sum(step.neurons.values())
            accumulates += step.accumulates
            if count in cosines:
                cosines[count].append(_cosine(reference, step.hidden, mask, program.scale_out))
            if step.silent:
                settled_at = count
            if settled_at or count == max_steps:
                break
        for later in (s for s in wanted if s > count):  # a settled run stays as it is
            cosines[later].append(_cosine(reference, step.hidden, mask, program.scale_out))
        settle.append(settled_at)
        if settled_at is not None:
            exact = exact and torch.equal(step.hidden, expected)
        macs += program_macs(program, ids)
    return SpikingAgreement(
        model=model.name, sentences=sentences, calibration_sentences=calibration,
        levels=levels, max_steps=max_steps, settled=sum(s is not None for s in settle),
        batches=len(settle), settle_steps=settle,
        bit_exact=exact if any(s is not None for s in settle) else None,
        integer_cosine=float(torch.cat(integer).mean()),
        cosine_at={s: float(torch.cat(c).mean()) for s, c in cosines.items()},
        min_cosine_at={s: float(torch.cat(c).min()) for s, c in cosines.items()},
        spike_rate=fired / max(1, neurons_steps), accumulates=accumulates, macs=macs)


def _cosine(reference: torch.Tensor, hidden: torch.Tensor, mask: torch.Tensor,
            scale: float) -> torch.Tensor:
    """Per sentence: the cosine of int16 hidden states' embedding to float's."""
    return (reference * mean_pooled(hidden.double() * scale, mask)).sum(-1)

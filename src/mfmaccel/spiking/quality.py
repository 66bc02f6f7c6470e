"""How a spiking program compares with its integer program and with float on real data: bit
equality once it settles, the cosine to float after each of a few step counts (the rate-coded
approximation), spikes, and ACs against the integer program's MACs.

An encoder (minilm-l6) is scored on the corpus's test paragraphs by the cosine of its sentence
embeddings (masked mean pooling, as sentence-transformers does); a VLM's DINOv2 tower (medvlm)
on the test images of the benchmark it was adapted on, by the cosine of its last hidden
states token by token (what its projector reads)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.arch import TECH_45NM, get_arch
from mfmaccel.hw.intexec.linear import product_inputs
from mfmaccel.hw.intexec.quality import (
    Progress,
    benchmark_splits,
    corpus_sentences,
    mean_pooled,
    reported,
    sentence_batches,
)
from mfmaccel.hw.spiking_array import SpikeGemm
from mfmaccel.models import load_model
from mfmaccel.models.loader import model_kind
from mfmaccel.models.record import ENCODER, VLM, LoadedModel
from mfmaccel.progress import Steps
from mfmaccel.progress import step as progress_step
from mfmaccel.records import Record
from mfmaccel.spiking.accelerator import bert_gemms, dinov2_gemms, priced
from mfmaccel.spiking.bert import SpikingBert, program_macs
from mfmaccel.spiking.layers import Step, run_until_settled
from mfmaccel.spiking.tiers import (
    SEARCH_BITS,
    ProgramMemory,
    TowerTiers,
    program_memory,
    tiered_weight_bits,
)
from mfmaccel.spiking.vit import SpikingDinov2, tower_macs


@dataclass
class SpikingAgreement(Record):
    model: str
    measure: str  # what the cosines compare
    inputs: int  # test paragraphs or images
    calibration_inputs: int  # train paragraphs or images the integer program was built on
    levels: int | None  # unit spikes a neuron may fire in one step (None: any)
    activation_bits: int | None  # the tensors a product reads (None: int8, 12-bit probabilities)
    window: int  # steps a neuron needs for its largest count: ceil((2^b - 1) / levels)
    max_steps: int
    settled: int  # batches that settled within max_steps
    batches: int
    settle_steps: list[int | None]  # per batch: the first silent step
    bit_exact: bool | None  # every settled batch equals the integer program (None: none did)
    exact_at_window: list[bool]  # per batch: equal to the integer program after `window` steps
    integer_cosine: float  # mean cosine of the integer program to float
    cosine_at: dict[int, float]  # steps -> mean cosine of the spiking program to float
    min_cosine_at: dict[int, float]
    spike_rate: float  # unit spikes per neuron per step, over every batch's steps
    accumulates: int  # ACs of every batch's steps
    macs: int  # the integer program's multiply-accumulates on the same inputs
    membrane_updates: int  # neurons x steps: each integrates its input once a step
    compute_uj_45nm: dict[str, float]  # arithmetic only (no memory traffic), Horowitz 45 nm
    # the program's GEMM weights against fp16 (`tiers.ProgramMemory`)
    memory: dict = field(default_factory=dict)
    avg_bits: float | None = None  # the budget the weight bits were searched for (None: int8)
    weight_bits: dict[str, int] = field(default_factory=dict)  # per linear, with --avg-bits
    # with an accelerator: `accelerator.SpikingEnergy` after each step count and settled
    energy: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def compute_energy(*, macs: int, accumulates: int, membrane_updates: int) -> dict[str, float]:
    """Arithmetic energy (uJ, 45 nm, Horowitz): the integer program's int8 MACs against the
    spiking program's 32-bit ACs and membrane updates (one 32-bit add each). Memory traffic,
    the graded operators and the firing logic are not in it."""
    to_uj = 1e-6
    integer = macs * TECH_45NM.mac_pj * to_uj
    spiking = (accumulates + membrane_updates) * TECH_45NM.add32_pj * to_uj
    return {"integer": integer, "spiking": spiking, "ratio": spiking / integer if integer else 0,
            "break_even_accumulates_per_mac": TECH_45NM.mac_pj / TECH_45NM.add32_pj}


@dataclass
class _Batch:
    """One batch to run: its steps (not started until read), the integer program's output,
    how to score an output against float, and the integer program's MACs on it."""

    steps: Iterator[Step]
    expected: torch.Tensor
    cosine: Callable[[torch.Tensor], torch.Tensor]
    macs: int
    gemms: Callable[..., list[SpikeGemm]]  # (run, steps=n): its spike-fed GEMMs after n steps


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


def window_steps(activation_bits: int | None, levels: int | None) -> int:
    """The steps a neuron needs to fire the largest count its tensor holds (2^b - 1 unit
    spikes for b-bit probabilities, 4095 at the programs' own 12 bits), `levels` a step."""
    largest = product_inputs(activation_bits, per_token=False).probabilities.high
    return 1 if levels is None else -(-largest // levels)


def spiking_for_spec(spec: str, *, levels: int | None = 16, steps: Sequence[int] = (8, 64),
                     max_steps: int = 4096, sentences: int = 16, images: int = 8,
                     calibration: int = 64, activation_bits: int | None = None,
                     avg_bits: float | None = None, arch: str | None = None,
                     progress: Steps | None = None) -> SpikingAgreement:
    """The agreement of a model named by spec (an encoder on `sentences` test paragraphs, a
    VLM's tower on `images` test images), its settings checked before it loads."""
    for flag, value in {"--max-steps": max_steps, "--sentences": sentences, "--images": images,
                        "--calibration": calibration}.items():
        if value < 1:
            raise UserInputError(f"{flag} must be at least 1, got {value}")
    if levels is not None and levels < 1:
        raise UserInputError(f"--levels must be at least 1 (0: any number), got {levels}")
    if arch is not None:
        get_arch(arch)  # an unknown preset is refused before the model loads
    window = window_steps(activation_bits, levels)
    if activation_bits is not None and max_steps < window:
        raise UserInputError(f"--max-steps {max_steps} is below the {window} steps a neuron "
                             f"needs for its largest count at {activation_bits} bits and these "
                             "levels; raise --max-steps or --levels, or lower --activation-bits")
    kind = model_kind(spec)
    if kind not in (ENCODER, VLM):
        raise UserInputError(f"{spec} is neither an encoder nor a VLM; spiking conversion "
                             "covers BERT encoders (minilm-l6) and DINOv2 towers (medvlm)")
    measure, inputs = (spiking_agreement, sentences) if kind == ENCODER else \
        (tower_agreement, images)
    if avg_bits is not None and not 0 < avg_bits < 16:
        raise UserInputError(f"--avg-bits {avg_bits:g}: give the average weight bits between "
                             "the fewest the linears take (about 3) and fp16's 16, e.g. 4")
    return measure(load_model(spec), levels=levels, inputs=inputs, calibration=calibration,
                   steps=steps, max_steps=max_steps, activation_bits=activation_bits,
                   avg_bits=avg_bits, arch=arch,
                   calibration_progress=progress_step(progress, "calibration"),
                   progress=progress_step(progress, "spiking runs"))


@torch.inference_mode()
def spiking_agreement(model: LoadedModel, *, levels: int | None = 16, inputs: int = 16,
                      calibration: int = 64, steps: Sequence[int] = (8, 16, 32, 64, 128, 256),
                      max_steps: int = 4096, max_length: int = 64, batch_size: int = 8,
                      activation_bits: int | None = None, avg_bits: float | None = None,
                      arch: str | None = None, calibration_progress: Progress = None,
                      progress: Progress = None) -> SpikingAgreement:
    """An encoder's spiking program (its static-scale integer program, calibrated on the
    corpus's train half, with `activation_bits`, and weight bits mixed to `avg_bits`) on
    `inputs` test paragraphs."""
    from mfmaccel.hw.intexec.bert import convert_bert

    if model.kind != ENCODER:
        raise UserInputError(f"{model.name} is not an encoder; try minilm-l6")
    weight_bits = tiered_weight_bits(model, avg_bits=avg_bits, calibration=calibration) \
        .weight_bits if avg_bits is not None else {}
    program = convert_bert(model.module, reported(
        sentence_batches(model.tokenizer, corpus_sentences("train", calibration)),
        calibration_progress), per_token=False, activation_bits=activation_bits,
        weight_bits=weight_bits)
    spiking = SpikingBert(program, levels)

    def batches() -> Iterator[_Batch]:
        for batch in sentence_batches(model.tokenizer, corpus_sentences("test", inputs),
                                      size=batch_size, max_length=max_length):
            ids, mask = batch["input_ids"], batch["attention_mask"]
            reference = mean_pooled(model.module(**batch).last_hidden_state.double(), mask)

            def cosine(hidden, reference=reference, mask=mask):
                pooled = mean_pooled(hidden.double() * program.scale_out, mask)
                return (reference * pooled).sum(-1)

            yield _Batch(spiking.steps(ids, mask), program(ids, mask), cosine,
                         program_macs(program, ids),
                         partial(bert_gemms, spiking, ids))

    return _agreement(model.name, "sentence embeddings (mean pooled)", inputs, calibration,
                      _Settings(levels, activation_bits, steps, max_steps, arch),
                      reported(list(batches()), progress),
                      _Weights(program_memory(program), avg_bits, weight_bits))


@torch.inference_mode()
def tower_agreement(model: LoadedModel, *, levels: int | None = 16, inputs: int = 8,
                    calibration: int = 64, steps: Sequence[int] = (8, 16, 32, 64, 128, 256),
                    max_steps: int = 4096, batch_size: int = 4,
                    activation_bits: int | None = None, avg_bits: float | None = None,
                    arch: str | None = None, calibration_progress: Progress = None,
                    progress: Progress = None) -> SpikingAgreement:
    """A VLM's DINOv2 tower as a spiking program (its static-scale integer program, calibrated
    on `calibration` train images of its benchmark, weight bits mixed to `avg_bits`) on its
    first `inputs` test images."""
    from transformers import Dinov2Model

    from mfmaccel.finetune.data import pixel_tensor
    from mfmaccel.hw.intexec.dinov2 import convert_dinov2

    tower = model.module.model.vision_tower if model.kind == VLM else None
    if not isinstance(tower, Dinov2Model):
        raise UserInputError(f"{model.name} has no DINOv2 vision tower; spiking towers cover "
                             "DINOv2 (medvlm)")
    _, chosen, test = benchmark_splits(model, calibration)
    pixels = pixel_tensor(model.processor, [s.image for s in chosen])
    weight_bits = TowerTiers(tower, pixels, bits=SEARCH_BITS, avg_bits=avg_bits) \
        .at_average_bits(avg_bits).weight_bits if avg_bits is not None else {}
    program = convert_dinov2(tower, reported(list(pixels.split(16)), calibration_progress),
                             per_token=False, activation_bits=activation_bits,
                             weight_bits=weight_bits)
    spiking = SpikingDinov2(program, levels)
    scale = program.layers[-1].scales["out"]
    images = pixel_tensor(model.processor, [s.image for s in test[:inputs]])

    def batches() -> Iterator[_Batch]:
        for batch in images.split(batch_size):
            reference = tower(batch, output_hidden_states=True).hidden_states[-1].double()

            def cosine(hidden, reference=reference):
                return torch.nn.functional.cosine_similarity(
                    reference, hidden.double() * scale, dim=-1).mean(-1)

            yield _Batch(spiking.steps(batch), program.hidden_states(batch)[-1][0], cosine,
                         tower_macs(program, len(batch)),
                         partial(dinov2_gemms, spiking, len(batch)))

    return _agreement(model.name, "last hidden states (per token)", len(images), len(chosen),
                      _Settings(levels, activation_bits, steps, max_steps, arch),
                      reported(list(batches()), progress),
                      _Weights(program_memory(program), avg_bits, weight_bits))


@dataclass(frozen=True)
class _Settings:
    levels: int | None
    activation_bits: int | None
    steps: Sequence[int]
    max_steps: int
    arch: str | None = None  # an accelerator preset to price the spikes on


@dataclass(frozen=True)
class _Weights:
    """The program's weights: their bytes against fp16, and the bits mixed to a budget."""

    memory: ProgramMemory
    avg_bits: float | None
    weight_bits: dict[str, int]


def _agreement(name: str, measure: str, inputs: int, calibration: int, settings: _Settings,
               batches, weights: _Weights) -> SpikingAgreement:
    """Run every batch until it settles or `max_steps`, scoring it after each of `steps`,
    checking it against the integer program after the window a neuron's largest count
    needs, and (with `settings.arch`) pricing its spikes on a spiking accelerator."""
    max_steps = settings.max_steps
    window = window_steps(settings.activation_bits, settings.levels)
    wanted = sorted({s for s in settings.steps if s <= max_steps})
    cosines: dict[int, list[torch.Tensor]] = {s: [] for s in wanted}
    integer, at_window, runs = [], [], []
    for batch in batches:
        integer.append(batch.cosine(batch.expected))
        observed = _observed(batch, cosines, window, at_window)
        hidden, run = run_until_settled(observed, limit=max_steps, macs=batch.macs)
        for later in (s for s in wanted if s > run.steps):  # a settled run stays as it is
            cosines[later].append(batch.cosine(hidden))
        if run.settled_at is not None and run.steps < window:  # settled within the window
            at_window.append(torch.equal(hidden, batch.expected))
        runs.append((batch, run, run.settled_at is None or torch.equal(hidden, batch.expected)))
    settle = [run.settled_at for _, run, _ in runs]
    fired = sum(sum(sum(counts) for counts in run.spikes.values()) for _, run, _ in runs)
    neuron_steps = sum(sum(run.neurons.values()) * run.steps for _, run, _ in runs)
    accumulates = sum(sum(run.accumulates) for _, run, _ in runs)
    macs = sum(run.macs for _, run, _ in runs)
    return SpikingAgreement(
        model=name, measure=measure, inputs=inputs, calibration_inputs=calibration,
        levels=settings.levels, activation_bits=settings.activation_bits, window=window,
        max_steps=max_steps, settled=sum(s is not None for s in settle),
        batches=len(settle), settle_steps=settle,
        bit_exact=all(equal for *_, equal in runs) if any(s is not None for s in settle)
        else None,
        exact_at_window=at_window,
        integer_cosine=float(torch.cat(integer).mean()),
        cosine_at={s: float(torch.cat(c).mean()) for s, c in cosines.items()},
        min_cosine_at={s: float(torch.cat(c).min()) for s, c in cosines.items()},
        spike_rate=fired / max(1, neuron_steps), accumulates=accumulates, macs=macs,
        membrane_updates=neuron_steps,
        compute_uj_45nm=compute_energy(macs=macs, accumulates=accumulates,
                                       membrane_updates=neuron_steps),
        energy=_energy(runs, wanted, settings), memory=weights.memory.to_dict(),
        avg_bits=weights.avg_bits, weight_bits=weights.weight_bits)


def _observed(batch: _Batch, cosines: dict[int, list[torch.Tensor]], window: int,
              at_window: list[bool]) -> Iterator[Step]:
    """`batch`'s steps, scored after each step count in `cosines` and checked at `window`."""
    for count, step in enumerate(batch.steps, 1):
        if count in cosines:
            cosines[count].append(batch.cosine(step.hidden))
        if count == window:
            at_window.append(torch.equal(step.hidden, batch.expected))
        yield step


def _energy(runs: list, wanted: list[int], settings: _Settings) -> list[dict]:
    """Each batch's spikes priced on `settings.arch`'s spiking variant against it, after each
    of `wanted` steps and settled (a batch that settled earlier counts its whole run)."""
    if settings.arch is None:
        return []
    longest = max(run.steps for _, run, _ in runs)
    cuts = [(str(cut), cut) for cut in wanted if cut < longest] + [("settled", longest)]
    arch = get_arch(settings.arch)
    return [priced([(batch.gemms(run, steps=min(cut, run.steps)), min(cut, run.steps))
                    for batch, run, _ in runs], arch, levels=settings.levels,
                   label=label).to_dict() for label, cut in cuts]


"""Accuracy on a labelled task for a spiking encoder: sentence polarity (`data.polarity`, the
Rotten Tomatoes snippets SST-2 was built from) read from minilm-l6's sentence embeddings by a
linear probe.

The probe (`evaluate.probe`: standardized logistic regression, its L2 weight chosen on val) is
fitted once on the float model's embeddings of the train sentences and then reads, unchanged,
the test embeddings of the float model, of the static-scale integer program (which a settled
spiking program equals bit for bit), and of the spiking program stopped after each of a few step
counts: how much of the task survives each, with nothing retrained. The integer program is
calibrated on train sentences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from mfmaccel.data.polarity import load_polarity
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.probe import Labelled, accuracy, fit_logistic, linear_probe
from mfmaccel.hw.intexec.bert import IntBert, convert_bert, linear_names
from mfmaccel.hw.intexec.quality import Progress, mean_pooled, reported, sentence_batches
from mfmaccel.models.record import ENCODER, LoadedModel
from mfmaccel.records import Record
from mfmaccel.spiking.bert import SpikingBert, program_macs
from mfmaccel.spiking.layers import kept_states
from mfmaccel.spiking.tiers import SEARCH_BITS, encoder_tiers, program_memory

MAX_LENGTH = 64


@dataclass
class PolarityAccuracy(Record):
    model: str
    samples: dict[str, int]  # train, val, test sentences
    calibration: int  # train sentences the integer program was calibrated on
    activation_bits: int | None  # of the integer program (None: int8, 12-bit probabilities)
    levels: int | None  # of the spiking program (None: any)
    l2: float  # the probe's, chosen on val
    majority_baseline: float
    float_accuracy: float  # every test sentence
    integer_accuracy: float  # every test sentence; a settled spiking program's, bit for bit
    spiking_sentences: int  # the first test sentences the spiking program ran on
    float_subset_accuracy: float  # on those
    integer_subset_accuracy: float
    spiking_accuracy_at: dict[int, float]  # steps -> accuracy on those
    settled: int  # of the spiking batches, those that settled within the last step count
    batches: int
    spike_rate: float  # unit spikes per neuron per step, up to the last step count
    accumulates_per_mac: float  # ACs up to the last step count, per integer MAC
    memory: dict = field(default_factory=dict)  # the int8 program's weights against fp16
    # integer programs with fewer weight bits, on every test sentence: mixed to an average
    # (`tiers.WeightTiers.at_average_bits`) and uniform, each with its memory
    weight_tiers: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def _batches(model: LoadedModel, texts: list[str], size: int) -> list[dict[str, torch.Tensor]]:
    return sentence_batches(model.tokenizer, texts, size=size, max_length=MAX_LENGTH)


@torch.no_grad()  # not inference mode: the probe is fitted on these by autograd
def float_embeddings(model: LoadedModel, batches: Sequence[dict[str, torch.Tensor]]
                     ) -> torch.Tensor:
    return torch.cat([mean_pooled(model.module(**b).last_hidden_state.double(),
                                  b["attention_mask"]) for b in batches])


@torch.no_grad()
def integer_embeddings(program: IntBert, batches: Sequence[dict[str, torch.Tensor]]
                       ) -> torch.Tensor:
    return torch.cat([mean_pooled(program(b["input_ids"], b["attention_mask"]).double()
                                  * program.scale_out, b["attention_mask"]) for b in batches])


def polarity_accuracy(model: LoadedModel, *, levels: int | None = 16,
                      steps: Sequence[int] = (16, 32, 64, 128), spiking_sentences: int = 256,
                      calibration: int = 64, activation_bits: int | None = None,
                      sentences: int | None = None, batch_size: int = 32,
                      avg_bits: Sequence[float] = (), uniform_bits: Sequence[int] = (),
                      progress: Progress = None) -> PolarityAccuracy:
    """The probe's test accuracy on float, integer and spiking embeddings (the spiking ones on
    the first `spiking_sentences` test sentences, after each of `steps`); `sentences`: at most
    that many of each split (None: all). Also, on every test sentence, the integer program
    with its weight bits mixed to each of `avg_bits` (sensitivity on the calibration
    sentences) and at each of `uniform_bits`."""
    if model.kind != ENCODER:
        raise UserInputError(f"{model.name} is not an encoder; sentence polarity is read from "
                             "an encoder's embeddings (minilm-l6)")
    if not steps or min(steps) < 1 or min(spiking_sentences, calibration, sentences or 1) < 1:
        raise UserInputError("steps, sentences, spiking sentences and calibration sentences "
                             "must be at least 1")
    splits = {name: load_polarity(name)[:sentences] for name in ("train", "val", "test")}
    labelled = {name: Labelled(float_embeddings(model, _batches(
        model, [s.text for s in sentences], batch_size)), [s.label for s in sentences])
        for name, sentences in splits.items()}
    found = linear_probe(train=labelled["train"], val=labelled["val"], test=labelled["test"])
    probe = fit_logistic(labelled["train"], l2=found.l2)
    calibration_texts = [s.text for s in splits["train"][:calibration]]
    calibration_batches = _batches(model, calibration_texts, batch_size)
    with torch.no_grad():
        program = convert_bert(model.module, calibration_batches, per_token=False,
                               activation_bits=activation_bits)
    test_texts, test_labels = [s.text for s in splits["test"]], labelled["test"].labels
    test_batches = _batches(model, test_texts, batch_size)
    integer = integer_embeddings(program, test_batches)
    subset = min(spiking_sentences, len(test_texts))
    spiking = _spiking_embeddings(program, levels, sorted(set(steps)), reported(
        _batches(model, test_texts[:subset], batch_size), progress))

    def score(features: torch.Tensor, labels: list[str]) -> float:
        return accuracy(probe, Labelled(features, labels))

    def fewer_bits(weight_bits: dict[str, int]) -> dict:
        with torch.no_grad():
            fewer = convert_bert(model.module, calibration_batches, per_token=False,
                                 activation_bits=activation_bits, weight_bits=weight_bits)
            features = integer_embeddings(fewer, test_batches)
        return {"memory": program_memory(fewer).to_dict(),
                "integer_accuracy": score(features, test_labels)}

    weight_tiers = []
    if avg_bits:
        tiers = encoder_tiers(model, texts=calibration_texts, bits=SEARCH_BITS,
                              avg_bits=min(avg_bits))
        for bits in avg_bits:
            chosen = tiers.at_average_bits(bits)
            weight_tiers.append({**chosen.to_dict(), "name": f"module@{bits:g}-bits",
                                 "avg_bits": bits, **fewer_bits(chosen.weight_bits)})
    for bits in uniform_bits:
        weight_tiers.append({"name": f"uniform-{bits}",
                             **fewer_bits(dict.fromkeys(linear_names(model.module), bits))})

    return PolarityAccuracy(
        model=model.name, samples=found.samples, calibration=calibration,
        activation_bits=activation_bits, levels=levels, l2=found.l2,
        majority_baseline=found.majority_baseline, float_accuracy=found.accuracy,
        integer_accuracy=score(integer, test_labels), spiking_sentences=subset,
        float_subset_accuracy=score(labelled["test"].features[:subset], test_labels[:subset]),
        integer_subset_accuracy=score(integer[:subset], test_labels[:subset]),
        spiking_accuracy_at={t: score(e, test_labels[:subset])
                             for t, e in spiking.embeddings.items()},
        settled=spiking.settled, batches=spiking.batches, spike_rate=spiking.spike_rate,
        accumulates_per_mac=spiking.accumulates / max(1, spiking.macs),
        memory=program_memory(program).to_dict(), weight_tiers=weight_tiers)



@dataclass
class _SpikingEmbeddings:
    embeddings: dict[int, torch.Tensor]  # steps -> pooled embeddings of every batch
    settled: int
    batches: int
    spike_rate: float
    accumulates: int
    macs: int


@torch.no_grad()
def _spiking_embeddings(program: IntBert, levels: int | None, steps: list[int],
                        batches: Sequence[dict[str, torch.Tensor]]) -> _SpikingEmbeddings:
    """Each batch run up to the last of `steps` (a settled run stays as it is), pooled after
    each of them."""
    spiking = SpikingBert(program, levels)
    pooled: dict[int, list[torch.Tensor]] = {t: [] for t in steps}
    settled = fired = neuron_steps = accumulates = macs = 0
    for batch in batches:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        macs += program_macs(program, ids)
        kept = kept_states(spiking.steps(ids, mask), steps)
        for t, hidden in kept.states.items():
            pooled[t].append(mean_pooled(hidden.double() * program.scale_out, mask))
        settled += kept.settled_at is not None
        fired, neuron_steps = fired + kept.fired, neuron_steps + kept.neuron_steps
        accumulates += kept.accumulates
    return _SpikingEmbeddings({t: torch.cat(p) for t, p in pooled.items()}, settled,
                              len(batches), fired / max(1, neuron_steps), accumulates, macs)

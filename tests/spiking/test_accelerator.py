"""A spiking run's GEMMs for the spiking accelerator variant (spiking.accelerator): their ACs
are the run's, step for step, and their MACs the integer program's (tiny BERT on real text,
a tiny DINOv2 tower on medical images)."""

from __future__ import annotations

import pytest
import torch

from mfmaccel.data.medvqa import load_medvqa
from mfmaccel.errors import UserInputError
from mfmaccel.finetune.data import pixel_tensor
from mfmaccel.hw.arch import get_arch
from mfmaccel.hw.intexec.bert import convert_bert
from mfmaccel.hw.intexec.dinov2 import convert_dinov2
from mfmaccel.hw.intexec.quality import corpus_sentences
from mfmaccel.hw.spiking_array import compare
from mfmaccel.models import load_model
from mfmaccel.models.medvlm import TINY_PRETRAINED, build_medvlm
from mfmaccel.spiking.accelerator import bert_gemms, dinov2_gemms, priced
from mfmaccel.spiking.bert import SpikingBert
from mfmaccel.spiking.vit import SpikingDinov2


def _batch(model, split: str, count: int, length: int):
    texts = corpus_sentences(split, count)
    return dict(model.tokenizer(texts, padding=True, truncation=True, max_length=length,
                                return_tensors="pt"))


@pytest.fixture(scope="module")
def bert_run():
    model = load_model("tiny-bert")
    program = convert_bert(model.module, [_batch(model, "train", 16, 48)], per_token=False)
    batch = _batch(model, "test", 3, 20)
    spiking = SpikingBert(program, 8)
    with torch.inference_mode():
        _, run = spiking.run(batch["input_ids"], batch["attention_mask"])
    return spiking, batch["input_ids"], run


def test_bert_gemms_count_the_runs_accumulates_and_the_programs_macs(bert_run) -> None:
    spiking, ids, run = bert_run
    gemms = bert_gemms(spiking, ids, run)
    assert sum(g.accumulates for g in gemms) == sum(run.accumulates)
    assert sum(g.integer_op().macs for g in gemms) == run.macs
    early = bert_gemms(spiking, ids, run, steps=3)
    assert sum(g.accumulates for g in early) == sum(run.accumulates[:3])
    layers = len(spiking.program.layers)
    assert [g.name for g in gemms[:8]] == [f"0.{n}" for n in (
        "query", "key", "value", "score", "context", "attention_out", "intermediate",
        "output")] and len(gemms) == 8 * layers
    assert gemms[8].feeds[0].population == "0.norm2"


def test_a_bert_run_prices_on_edge_and_its_variant(bert_run) -> None:
    spiking, ids, run = bert_run
    result = compare(bert_gemms(spiking, ids, run), get_arch("edge"), steps=run.steps,
                     levels=8)
    assert result.macs == run.macs and result.accumulates == sum(run.accumulates)
    assert result.spiking.total_pj > 0 and result.integer.total_pj > 0
    assert len(result.gemms) == 8 * len(spiking.program.layers)


def test_steps_beyond_the_run_are_refused(bert_run) -> None:
    spiking, ids, run = bert_run
    with pytest.raises(UserInputError, match="steps must be between 1"):
        bert_gemms(spiking, ids, run, steps=run.steps + 1)
    with pytest.raises(UserInputError, match="steps must be between 1"):
        bert_gemms(spiking, ids, run, steps=0)


@torch.inference_mode()
def test_dinov2_gemms_count_the_runs_accumulates_and_the_towers_macs() -> None:
    model = build_medvlm(seed=0, tiny=True, vision=TINY_PRETRAINED)
    samples = load_medvqa("train", per_source=2)
    images = pixel_tensor(model.processor, [s.image for s in samples])
    program = convert_dinov2(model.module.model.vision_tower, [images], per_token=False)
    spiking = SpikingDinov2(program, None)
    _, run = spiking.run(images[:2])
    gemms = dinov2_gemms(spiking, 2, run)
    assert gemms[0].name == "patches" and gemms[0].feeds[0].population == "pixels"
    assert sum(g.accumulates for g in gemms) == sum(run.accumulates)
    assert sum(g.integer_op().macs for g in gemms) == run.macs


def test_batches_priced_together_sum_what_each_costs_alone(bert_run) -> None:
    spiking, ids, run = bert_run
    edge = get_arch("edge")
    alone = compare(bert_gemms(spiking, ids, run), edge, steps=run.steps, levels=8)
    both = priced([(bert_gemms(spiking, ids, run), run.steps)] * 2, edge, levels=8,
                  label="settled")
    assert both.integer_uj == pytest.approx(2 * alone.integer.total_pj * 1e-6)
    assert both.spiking_uj == pytest.approx(2 * alone.spiking.total_pj * 1e-6)
    assert both.ratio == pytest.approx(alone.energy_ratio)
    assert both.fixed_share == pytest.approx(alone.fixed_share)
    assert both.break_even_rate == pytest.approx(alone.break_even_rate)
    assert both.spike_rate == pytest.approx(alone.spike_rate)

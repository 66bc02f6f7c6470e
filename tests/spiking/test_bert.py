"""Spiking programs: the neuron settles on the requantized value, and a spiking BERT equals its
integer program bit for bit once no neuron fires (tiny BERT on real text)."""

from __future__ import annotations

import pytest
import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intexec.bert import convert_bert
from mfmaccel.hw.intexec.quality import corpus_sentences
from mfmaccel.hw.intops import INT8, dyadic, dyadic_vector, requantize
from mfmaccel.hw.intops.datapath import IntRange
from mfmaccel.models import load_model
from mfmaccel.spiking.bert import SpikingBert
from mfmaccel.spiking.neuron import Neuron


def _settle(neuron: Neuron, pieces: list[torch.Tensor], limit: int = 2000) -> int:
    """Feed the input in pieces (one a step), then step until no spike; the steps taken."""
    so_far = torch.zeros_like(pieces[0])
    for step in range(limit):
        if step < len(pieces):
            so_far = so_far + pieces[step]
        fired = neuron.step(so_far)
        if step >= len(pieces) and not bool(fired.any()):
            return step
    raise AssertionError("the neuron never settled")


@pytest.mark.parametrize("levels", [1, 3, None])
@pytest.mark.parametrize("out", [INT8, IntRange(8, signed=False), IntRange(4)])
def test_a_settled_neuron_counts_the_requantized_input(levels, out):
    generator = torch.Generator().manual_seed(7)
    pieces = [torch.randint(-40_000, 40_000, (64, 16), generator=generator) for _ in range(5)]
    total = sum(pieces)
    for factor in (dyadic(0.0021), dyadic_vector(torch.rand(16, generator=generator) / 200 + 1e-4)):
        neuron = Neuron(factor, out, levels)
        _settle(neuron, pieces)
        assert torch.equal(neuron.count, requantize(total, factor, out))


def test_a_neuron_fires_at_most_its_levels_a_step():
    neuron = Neuron(dyadic(1.0), INT8, levels=2)
    assert neuron.step(torch.tensor([100, -100, 1])).tolist() == [2, -2, 1]
    follower = Neuron(None, IntRange(8, signed=False), levels=None)
    assert follower.step(torch.tensor([300, -5, 17])).tolist() == [255, 0, 17]


@pytest.fixture(scope="module")
def tiny_bert():
    return load_model("tiny-bert")


def _batch(model, split: str, count: int, length: int):
    texts = corpus_sentences(split, count)
    return dict(model.tokenizer(texts, padding=True, truncation=True, max_length=length,
                                return_tensors="pt"))


@pytest.fixture(scope="module")
def program(tiny_bert):
    return convert_bert(tiny_bert.module, [_batch(tiny_bert, "train", 16, 48)], per_token=False)


@pytest.mark.parametrize("levels", [1, 8])
@torch.inference_mode()
def test_spiking_bert_equals_its_integer_program_once_settled(tiny_bert, program, levels):
    batch = _batch(tiny_bert, "test", 3, 20)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    expected = program(ids, mask)
    hidden, run = SpikingBert(program, levels).run(ids, mask)
    assert run.settled_at == run.steps
    assert torch.equal(hidden, expected)
    assert 0 < run.spike_rate() <= levels and sum(run.accumulates) > 0
    # a unit-spike int8 neuron needs up to 127 steps; more levels need fewer
    assert run.steps > 127 if levels == 1 else run.steps < 64


@torch.inference_mode()
def test_fewer_steps_give_the_rate_coded_approximation(tiny_bert, program):
    batch = _batch(tiny_bert, "test", 2, 16)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    expected = program(ids, mask).double()
    errors = []
    for steps in (4, 32, 96):
        hidden, run = SpikingBert(program, 1).run(ids, mask, steps=steps)
        assert run.steps == steps and run.settled_at is None
        errors.append(float((hidden.double() - expected).abs().mean()))
    assert errors[0] > errors[1] > errors[2] > 0


def test_what_spikes_cannot_run_is_refused(tiny_bert, program):
    per_token = convert_bert(tiny_bert.module, [_batch(tiny_bert, "train", 4, 16)])
    with pytest.raises(UserInputError, match="per-token scales"):
        SpikingBert(per_token)
    with pytest.raises(UserInputError, match="--levels must be at least 1"):
        SpikingBert(program, 0)
    batch = _batch(tiny_bert, "test", 1, 8)
    with pytest.raises(UserInputError, match="--steps must be at least 1"):
        SpikingBert(program).run(batch["input_ids"], batch["attention_mask"], steps=0)


@pytest.mark.parametrize("bits", [3, 5])
@torch.inference_mode()
def test_a_b_bit_program_spikes_within_its_ranges_and_settles_on_it(tiny_bert, bits):
    """Every tensor a product reads holds b bits (probabilities too), unit spikes settle on the
    b-bit program bit for bit, and that program is not the 8-bit one."""
    program = convert_bert(tiny_bert.module, [_batch(tiny_bert, "train", 16, 48)],
                           per_token=False, activation_bits=bits)
    eight_bit = convert_bert(tiny_bert.module, [_batch(tiny_bert, "train", 16, 48)],
                             per_token=False, activation_bits=8)
    layer = program.layers[0]
    assert layer.inputs.signed == IntRange(bits) and layer.attention.probability_bits == bits
    assert layer.norm1.to_gemm.out == IntRange(bits)
    batch = _batch(tiny_bert, "test", 3, 20)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    hidden, run = SpikingBert(program, 1).run(ids, mask)
    assert run.settled_at == run.steps and torch.equal(hidden, program(ids, mask))
    assert not torch.equal(hidden, SpikingBert(eight_bit, 1).run(ids, mask)[0])


def test_b_bits_need_static_scales_and_a_width_the_datapath_takes(tiny_bert):
    batch = [_batch(tiny_bert, "train", 4, 16)]
    with pytest.raises(UserInputError, match="needs static scales"):
        convert_bert(tiny_bert.module, batch, activation_bits=4)
    for bits in (1, 9):
        with pytest.raises(UserInputError, match="choose 2 to 8"):
            convert_bert(tiny_bert.module, batch, per_token=False, activation_bits=bits)

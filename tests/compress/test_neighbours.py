"""Moves around a uniform assignment, measured with every other block quantized (tiny Qwen2)."""

from __future__ import annotations

import pytest
import torch

from mfmaccel.compress.fakequant import fake_quantized, rtn_weight
from mfmaccel.compress.mixed import part_bytes
from mfmaccel.compress.neighbours import SwappedWeights, measure_neighbours, neighbour_labels
from mfmaccel.compress.prober import Prober
from mfmaccel.errors import UserInputError
from mfmaccel.models import load_model
from mfmaccel.runtime.grid import QuantSpec
from mfmaccel.runtime.parts import quantizable_parts

SPECS = [QuantSpec(3, 16), QuantSpec(4, 16), QuantSpec(6, 16)]


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-qwen2")


@pytest.fixture(scope="module")
def batches():
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, 250, (1, 40), generator=generator) for _ in range(2)]


@pytest.fixture(scope="module")
def around_four(tiny, batches):
    return measure_neighbours(tiny.module, batches, SPECS, 4, margin=0.02)


def test_a_nested_swap_rounds_the_original_weight_and_everything_comes_back(tiny):
    parts = quantizable_parts(tiny.module)
    name = next(n for n in parts if n.endswith("mlp.down_proj"))
    layer = parts[name][1]
    original = layer.weight.data.clone()
    expected = {spec.label: rtn_weight(layer, spec) for spec in SPECS[:2]}  # from the original
    weights = SwappedWeights(parts, {s.label: s for s in SPECS})
    low, middle = SPECS[0].label, SPECS[1].label
    with weights.applied(dict.fromkeys(parts, middle)):
        with weights.applied({name: low}):
            assert torch.equal(layer.weight.data, expected[low])
        assert torch.equal(layer.weight.data, expected[middle])
    assert torch.equal(layer.weight.data, original)


def test_each_move_equals_the_whole_model_run_with_that_block_moved(tiny, batches, around_four):
    parts = quantizable_parts(tiny.module)
    prober = Prober(tiny.module, batches)
    by_label = {s.label: s for s in SPECS}
    middle = SPECS[1].label
    assert around_four.center == middle
    with fake_quantized({n: (layer, by_label[middle]) for n, (_, layer) in parts.items()}):
        assert around_four.center_measured == pytest.approx(prober.kl_from(None), rel=1e-5)
    for block in ("layers.0", "head"):
        for label in neighbour_labels(list(by_label), middle):
            chosen = {n: (layer, by_label[label if part.block == block else middle])
                      for n, (part, layer) in parts.items()}
            with fake_quantized(chosen):
                whole = prober.kl_from(None) - around_four.center_measured
            assert around_four.moves[block][label] == pytest.approx(whole, rel=1e-4, abs=1e-7)
    low, high = SPECS[0].label, SPECS[2].label
    for block, moves in around_four.moves.items():  # fewer bits hurt, more bits help
        assert moves[low] > 0 > moves[high], block


def test_a_chosen_mixture_measured_below_the_margin_with_fewer_bytes(tiny, around_four):
    parts = {n: p for n, (p, _) in quantizable_parts(tiny.module).items()}
    by_label = {s.label: s for s in SPECS}
    uniform = sum(part_bytes(p, around_four.center, by_label) for p in parts.values())
    for attempt in around_four.tries:
        assert attempt["weight_bytes"] < uniform
    allowances = [t["allowance"] for t in around_four.tries]
    assert allowances == sorted(allowances, reverse=True)  # each miss tightens the next solve
    assert around_four.choice is not None  # this tiny model has one
    assert set(around_four.choice) == set(parts)
    assert around_four.measured <= around_four.center_measured * (1 - around_four.margin)
    mixed = sum(part_bytes(parts[n], lab, by_label) for n, lab in around_four.choice.items())
    assert mixed == around_four.tries[-1]["weight_bytes"] < uniform


def test_a_centre_outside_the_specs_is_refused(tiny, batches):
    with pytest.raises(UserInputError, match="bit-width 5 is not among the specs"):
        measure_neighbours(tiny.module, batches, SPECS, 5)


def test_the_module_tier_moves_each_linear_on_its_own(tiny, batches):
    found = measure_neighbours(tiny.module, batches, SPECS, 4, tier="module", tries=1)
    assert set(found.moves) == set(quantizable_parts(tiny.module))
    assert found.tier == "module" and len(found.tries) <= 1


def test_an_unknown_tier_is_refused(tiny, batches):
    with pytest.raises(UserInputError, match="tier 'layer': choose block or module"):
        measure_neighbours(tiny.module, batches, SPECS, 4, tier="layer")

"""Block cache, the three sensitivity tiers and the tiered mixed-precision search (tiny Llama)."""

from __future__ import annotations

import pytest
import torch

from mfmaccel.compress.blocks import capture_blocks, head_logprobs, run_blocks
from mfmaccel.compress.mixed import MixedSearch
from mfmaccel.compress.sensitivity import measure_sensitivity
from mfmaccel.errors import UserInputError
from mfmaccel.models import load_model
from mfmaccel.runtime.grid import QuantSpec
from mfmaccel.runtime.parts import HEAD, quantizable_parts

SPECS = [QuantSpec(2, 16), QuantSpec(4, 16)]


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-llama")


@pytest.fixture(scope="module")
def batches():
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(0, 250, (1, 48), generator=generator) for _ in range(2)]


@pytest.fixture(scope="module")
def sensitivity(tiny, batches):
    return measure_sensitivity(tiny.module, batches, SPECS)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_rerunning_from_any_cached_block_reproduces_the_model(arch, batches):
    model = load_model(f"tiny-{arch}")
    cache = capture_blocks(model.module, batches)
    with torch.inference_mode():
        expected = model.module(input_ids=batches[1]).logits.float().log_softmax(-1)
    for start in range(cache.blocks):
        got = head_logprobs(model.module, run_blocks(model.module, cache, start, 1))
        assert torch.allclose(got, expected, atol=1e-5), start


def test_every_tier_is_measured_and_fewer_bits_hurt_more(tiny, sensitivity):
    parts = quantizable_parts(tiny.module)
    assert set(sensitivity.modules) == set(parts) and HEAD in sensitivity.blocks
    low, high = (s.label for s in SPECS)
    assert sensitivity.network[low] > sensitivity.network[high] > 0
    for block, by_label in sensitivity.blocks.items():
        assert by_label[low] > by_label[high] >= 0, block
    for block in sensitivity.blocks:  # modules split their block's KL between them
        members = [n for n, (p, _) in parts.items() if p.block == block]
        total = sum(sensitivity.modules[n][low] for n in members)
        assert total == pytest.approx(sensitivity.blocks[block][low], rel=1e-6)


def test_mixed_search_respects_budgets_and_tiers(tiny, sensitivity):
    parts = {n: p for n, (p, _) in quantizable_parts(tiny.module).items()}
    search = MixedSearch(parts, sensitivity)
    low, high = (s.label for s in SPECS)
    smallest, full = search.minimum_bytes(), search.full_bytes()
    assert smallest == search.uniform(low).weight_bytes < full
    budget = (search.uniform(low).weight_bytes + search.uniform(high).weight_bytes) / 2
    block, module = search.by_block(budget), search.by_module(budget)
    for point in (block, module):
        assert point.weight_bytes <= budget
        assert set(point.choice) == set(parts)
    assert module.predicted_kl <= block.predicted_kl + 1e-12  # refining never loses
    roomy = search.by_module(full)  # room for everything: nothing needs to lose precision
    assert roomy.predicted_kl <= 1e-3 * sensitivity.network[high]
    front = search.front([smallest, budget, full])
    kls = [p.predicted_kl for p in front]
    assert kls == sorted(kls, reverse=True)


def test_infeasible_budget_names_the_minimum(tiny, sensitivity):
    parts = {n: p for n, (p, _) in quantizable_parts(tiny.module).items()}
    search = MixedSearch(parts, sensitivity)
    with pytest.raises(UserInputError, match=f"{search.minimum_bytes():,} bytes"):
        search.by_block(search.minimum_bytes() - 1)

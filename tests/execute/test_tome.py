"""Token merging in the vision tower: exact merges of identical tokens, order and sizes,
proportional attention, r=0 as the unmerged model, token counts at the layer a LLaVA reads,
bad r refused."""

from __future__ import annotations

import pytest
import torch

from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.vqa import answer_scores, prompt_inputs
from mfmaccel.execute.tome import attend, bipartite_merge, tokens_after, with_token_merging
from mfmaccel.models.medvlm import PretrainedTower, build_medvlm
from mfmaccel.models.tiny import build_tiny
from tests.execute.test_resolution import image_token_count, make_sample, tiny_dinov2


@pytest.fixture(scope="module")
def dinov2_llava():
    return build_medvlm(seed=0, tiny=True, vision=PretrainedTower(image_size=56))


def test_two_identical_tokens_merge_exactly():
    torch.manual_seed(0)
    x = torch.randn(1, 7, 4)  # CLS, then A B A B A B
    x[0, 3] = x[0, 6]  # an A token equal to a B token: cosine 1, the best match
    merged, size = bipartite_merge(x, torch.ones(1, 7, 1), x, r=1)
    assert merged.shape == (1, 6, 4)
    # order kept: CLS, then the tokens where they were, the A copy gone
    torch.testing.assert_close(merged[0], x[0, [0, 1, 2, 4, 5, 6]], rtol=0, atol=0)
    assert size[0, :, 0].tolist() == [1, 1, 1, 1, 1, 2]


def test_merges_average_by_size_and_protect_cls():
    x = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [3.0, 0.1], [0.0, 5.0], [0.0, 1.0]]])
    size = torch.tensor([[[1.0], [1.0], [3.0], [2.0], [2.0]]])
    merged, sizes = bipartite_merge(x, size, x, r=2)
    # A = (1,0), (0,5); B = (3,0.1), (0,1): each A joins its parallel B token
    expected = torch.tensor([[[9.0, 9.0], [(1 + 9) / 4, 0.3 / 4], [0.0, (10 + 2) / 4]]])
    torch.testing.assert_close(merged, expected)
    assert sizes[0, :, 0].tolist() == [1, 4, 4]


def test_proportional_attention_counts_a_token_of_size_two_twice():
    """Keys [a, b] with sizes [1, 2] draw the attention of keys [a, b, b]."""
    attention = build_tiny("llava").module.model.vision_tower.encoder.layers[0].self_attn
    torch.manual_seed(0)
    a, b = torch.randn(1, 1, 64), torch.randn(1, 1, 64)
    with torch.inference_mode():
        bias = torch.tensor([1.0, 2.0]).log().view(1, 1, 1, 2)
        weighted, _ = attend(attention, torch.cat([a, b], 1), bias)
        repeated, _ = attend(attention, torch.cat([a, b, b], 1), None)
    torch.testing.assert_close(weighted, repeated[:, :2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny_llava", "dinov2_llava"])
def test_r0_is_the_unmerged_model(request, name):
    model = request.getfixturevalue(name)
    same = with_token_merging(model, r=0)
    pixels = prompt_inputs(model, make_sample())["pixel_values"]
    with torch.inference_mode():
        expected = model.module.model.vision_tower(pixels, output_hidden_states=True)
        got = same.module.model.vision_tower(pixels)
    for mine, theirs in zip(got.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, rtol=0, atol=0)
    assert answer_scores(same, make_sample()) == answer_scores(model, make_sample())


@pytest.mark.parametrize("name, r, layers, tokens", [
    ("tiny_llava", 2, 2, 17 - 4 - 1), ("tiny_llava", 5, 2, 17 - 10 - 1),
    ("dinov2_llava", 3, 1, 17 - 3 - 1),
])
def test_image_tokens_match_the_merged_tower(request, name, r, layers, tokens):
    model = request.getfixturevalue(name)
    merged = with_token_merging(model, r=r)
    pixels = prompt_inputs(merged, make_sample())["pixel_values"]
    with torch.inference_mode():
        states = merged.module.model.vision_tower(pixels).hidden_states
    assert [s.shape[1] for s in states] == [17 - r * k for k in range(layers + 1)]
    assert image_token_count(merged) == tokens == merged.meta["vision_knobs"]["image_tokens"]
    assert len(answer_scores(merged, make_sample())) == 2
    assert image_token_count(model) == 16  # the input model is untouched


def test_merging_stops_at_the_layer_the_llava_reads():
    model = build_tiny("llava")
    model.module.config.vision_feature_layer = -2  # hidden state 1: the first block's output
    merged = with_token_merging(model, r=3)
    assert image_token_count(merged) == 17 - 3 - 1
    assert len(answer_scores(merged, make_sample())) == 2


def test_bare_dinov2_tower_merges_in_every_block():
    model = with_token_merging(tiny_dinov2(), r=3)
    pixels = model.processor(images=make_sample().image, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        out = model.module(pixel_values=pixels)
    assert out.last_hidden_state.shape == (1, 17 - 6, 32)
    assert out.pooler_output.shape == (1, 32)


def test_tokens_after_caps_r_at_half_the_mergeable_tokens():
    assert tokens_after(65, r=4, layers=12) == 17  # medvlm at 112 px: 64 patches + CLS
    assert tokens_after(65, r=5, layers=12) is None
    assert tokens_after(257, r=16, layers=12) == 65


@pytest.mark.parametrize("r, named", [(6, "r=6 must be between 0 and 5"), (-1, "r=-1")])
def test_bad_r_is_refused_with_the_largest_that_works(tiny_llava, r, named):
    with pytest.raises(UserInputError, match=named):
        with_token_merging(tiny_llava, r=r)


def test_hybrid_tower_is_refused():
    with pytest.raises(UserInputError, match="token merging knows DINOv2 and CLIP"):
        with_token_merging(build_medvlm(seed=0, tiny=True), r=1)


def test_merging_composes_after_the_other_knobs_only(tiny_llava):
    from mfmaccel.execute.resolution import with_resolution

    merged = with_token_merging(with_resolution(tiny_llava, image_size=48), r=4)
    assert image_token_count(merged) == 37 - 8 - 1
    with pytest.raises(UserInputError, match="set them before r"):
        with_resolution(merged, image_size=32)
    with pytest.raises(UserInputError, match="already merges tokens"):
        with_token_merging(merged, r=1)


def test_generation_runs_on_a_merged_model(tiny_llava):
    from mfmaccel.evaluate.vqa import generate_answer

    merged = with_token_merging(tiny_llava, r=3)
    assert isinstance(generate_answer(merged, make_sample(), max_new_tokens=3), str)

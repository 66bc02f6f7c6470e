"""The input-resolution knob: identity at the native size, image-token counts, position
embeddings that follow the grid, the input model untouched, bad sizes refused."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from PIL import Image

from mfmaccel.data.medvqa import VQASample
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.vqa import answer_scores, prompt_inputs
from mfmaccel.execute.resolution import with_resolution
from mfmaccel.execute.stride import with_patch_stride
from mfmaccel.execute.tome import with_token_merging
from mfmaccel.models import load_model
from mfmaccel.models.medvlm import PretrainedTower, build_medvlm
from mfmaccel.models.onnx_vit import image_processor
from mfmaccel.models.record import VISION, LoadedModel
from mfmaccel.models.tiny import build_tiny


def make_sample() -> VQASample:
    return VQASample(image=Image.new("RGB", (48, 40), (120, 30, 30)), question="Is there a lesion?",
                     answer="yes", question_type="presence", answer_set=["yes", "no"],
                     source_id="synthetic", split="test")


def image_token_count(model: LoadedModel) -> int:
    ids = prompt_inputs(model, make_sample())["input_ids"]
    return int((ids == model.module.config.image_token_id).sum())


def tiny_dinov2() -> LoadedModel:
    """A bare DINOv2 tower (random, two layers) at 56 pixels: 4x4 patches of 14."""
    torch.manual_seed(0)
    config = tf.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             patch_size=14, image_size=56)
    return LoadedModel(name="tiny-dinov2", module=tf.Dinov2Model(config).eval(), tokenizer=None,
                       family="dinov2", kind=VISION, source="random init",
                       processor=image_processor(56))


@pytest.fixture(scope="module")
def dinov2_llava() -> LoadedModel:
    """medvlm's code on a tiny random DINOv2 tower at 56 pixels (16 image tokens)."""
    return build_medvlm(seed=0, tiny=True, vision=PretrainedTower(image_size=56))


@pytest.mark.parametrize("name, side", [("tiny_llava", 32), ("dinov2_llava", 56)])
def test_native_size_gives_the_same_scores(request, name, side):
    model = request.getfixturevalue(name)
    same = with_resolution(model, image_size=side)
    assert answer_scores(same, make_sample()) == answer_scores(model, make_sample())
    assert image_token_count(same) == image_token_count(model) == 16


@pytest.mark.parametrize("name, side, tokens", [
    ("tiny_llava", 64, 64), ("tiny_llava", 16, 4), ("dinov2_llava", 84, 36),
    ("dinov2_llava", 28, 4),
])
def test_image_tokens_follow_the_grid_and_scoring_runs(request, name, side, tokens):
    model = with_resolution(request.getfixturevalue(name), image_size=side)
    assert prompt_inputs(model, make_sample())["pixel_values"].shape[-2:] == (side, side)
    assert image_token_count(model) == tokens
    scores = answer_scores(model, make_sample())
    assert len(scores) == 2 and all(torch.isfinite(torch.tensor(scores)))
    assert model.meta["vision_knobs"] == {"image_size": side, "image_tokens": tokens}


def test_clip_position_table_is_clips_own_interpolation(tiny_llava):
    """The copy's fixed table equals what CLIP computes with interpolate_pos_encoding=True."""
    bigger = with_resolution(tiny_llava, image_size=48)
    pixels = torch.randn(1, 3, 48, 48)
    with torch.inference_mode():
        got = bigger.module.model.vision_tower(pixels).last_hidden_state
        expected = tiny_llava.module.model.vision_tower(
            pixels, interpolate_pos_encoding=True).last_hidden_state
    torch.testing.assert_close(got, expected)


def test_input_model_is_untouched_and_weights_are_shared():
    model = build_tiny("llava")  # fresh: its tower has not recorded hidden states yet
    bigger = with_resolution(model, image_size=64)
    answer_scores(bigger, make_sample())
    tower, copy_tower = model.module.model.vision_tower, bigger.module.model.vision_tower
    assert tower.config.image_size == 32 and copy_tower.config.image_size == 64
    assert model.processor.image_processor.crop_size["height"] == 32
    assert tower.embeddings.position_embedding.weight.shape[0] == 17
    assert copy_tower.encoder.layers[0].mlp.fc1.weight is tower.encoder.layers[0].mlp.fc1.weight
    with torch.inference_mode():  # one set of hidden-state hooks: not one per copy
        states = tower(torch.randn(1, 3, 32, 32), output_hidden_states=True).hidden_states
    assert len(states) == tower.config.num_hidden_layers + 1
    assert image_token_count(model) == 16


def test_bare_dinov2_tower():
    model = with_resolution(tiny_dinov2(), image_size=84)
    pixels = model.processor(images=make_sample().image, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        out = model.module(pixel_values=pixels).last_hidden_state
    assert out.shape == (1, 1 + 36, 32)


def test_hybrid_tower_changes_resolution():
    """medvlm-v1's ViT-hybrid (tiny: 64 px, stride-32 stem) reads 96 px as 3x3 tokens."""
    model = with_resolution(build_medvlm(seed=0, tiny=True), image_size=96)
    assert image_token_count(model) == 9
    assert len(answer_scores(model, make_sample())) == 2


@pytest.mark.parametrize("side", [30, 4, 0, -8])
def test_bad_sizes_are_refused(tiny_llava, side):
    with pytest.raises(UserInputError, match=f"image_size={side} must be a multiple of .* 8"):
        with_resolution(tiny_llava, image_size=side)


def test_a_text_model_is_refused(tiny_llama):
    with pytest.raises(UserInputError, match="vision"):
        with_resolution(tiny_llama, image_size=32)


@pytest.mark.slow
@pytest.mark.pretrained
def test_vision_knobs_score_medvlm_questions():
    from mfmaccel.evaluate.run import vqa_samples

    medvlm = load_model("medvlm")
    samples = vqa_samples(None, "test", limit=3, benchmark="medvqa2")
    same = with_token_merging(with_resolution(medvlm, image_size=112), r=0)
    knobs = [(with_resolution(medvlm, image_size=84), 36),
             (with_patch_stride(medvlm, patch=16, image_size=128), 64),
             (with_token_merging(medvlm, r=4), 64 - 48)]
    for sample in samples:
        assert answer_scores(same, sample) == pytest.approx(answer_scores(medvlm, sample),
                                                            abs=1e-5)
        for model, tokens in knobs:
            assert model.meta["vision_knobs"]["image_tokens"] == tokens
            assert len(answer_scores(model, sample)) == len(sample.answer_set)

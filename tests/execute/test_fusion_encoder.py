"""Encoder fusion on tiny real architectures (BERT, ViT, DINOv2 with LayerScale and SwiGLU, a
LLaVA's DINOv2 tower): outputs within 1e-4 relative, hidden states still recorded, BERT's
padding masks, the input model untouched, the report's counts, the vision knobs in either
order, and refusals."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from transformers.models.dinov2.modeling_dinov2 import Dinov2Layer

from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.vqa import prompt_inputs
from mfmaccel.execute.fusion import fuse
from mfmaccel.execute.fusion_encoder_blocks import FusedDinov2Block, LayerNormalize
from mfmaccel.execute.fusion_packed import packing_available
from mfmaccel.execute.resolution import with_resolution
from mfmaccel.execute.stride import with_patch_stride
from mfmaccel.execute.tome import with_token_merging
from mfmaccel.models import load_model
from mfmaccel.models.medvlm import PretrainedTower, build_medvlm
from mfmaccel.models.onnx_vit import image_processor
from mfmaccel.models.record import VISION, LoadedModel
from mfmaccel.runtime.grid import INT8_PER_CHANNEL, quantize_rtn
from mfmaccel.runtime.linear import QuantLinear
from tests.execute.test_resolution import make_sample

RELATIVE = 1e-4


def _perturbed(model: LoadedModel) -> LoadedModel:
    """Norm weights and biases, biases and LayerScales away from their init's ones and zeros, so
    every fold has something to get wrong."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.module.named_parameters():
            if "norm" in name.lower() or name.endswith("bias") or "lambda1" in name:
                param.add_(0.5 * torch.randn(param.shape, generator=generator))
    return model


def tiny_dinov2(*, swiglu: bool = False) -> LoadedModel:
    """A bare DINOv2 (random, two layers) at 56 pixels: 4x4 patches of 14."""
    torch.manual_seed(0)
    config = tf.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             patch_size=14, image_size=56, use_swiglu_ffn=swiglu)
    return LoadedModel(name="tiny-dinov2", module=tf.Dinov2Model(config).eval(), tokenizer=None,
                       family="dinov2", kind=VISION, source="random init",
                       processor=image_processor(56))


def _model(name: str) -> LoadedModel:
    if name.startswith("tiny-dinov2"):
        return _perturbed(tiny_dinov2(swiglu=name.endswith("swiglu")))
    return _perturbed(load_model(name))


def _inputs(model: LoadedModel) -> dict:
    generator = torch.Generator().manual_seed(2)
    if model.family == "bert":
        ids = torch.randint(5, 200, (3, 20), generator=generator)
        mask = torch.ones_like(ids)
        mask[1, 13:], mask[2, 6:] = 0, 0  # a padded batch: the mask matters
        return {"input_ids": ids, "attention_mask": mask}
    side = model.module.config.image_size
    return {"pixel_values": torch.randn(2, 3, side, side, generator=generator)}


def _outputs(model: LoadedModel, inputs: dict):
    with torch.inference_mode():
        return model.module(**inputs, output_hidden_states=True)


def _assert_close(reference: torch.Tensor, fused: torch.Tensor) -> None:
    assert reference.shape == fused.shape
    assert float((reference - fused).abs().max()) <= RELATIVE * float(reference.abs().max())


def _assert_same_outputs(model: LoadedModel, fused: LoadedModel, inputs: dict) -> None:
    reference, out = _outputs(model, inputs), _outputs(fused, inputs)
    _assert_close(reference.last_hidden_state, out.last_hidden_state)
    if reference.pooler_output is not None:
        _assert_close(reference.pooler_output, out.pooler_output)
    assert len(out.hidden_states) == len(reference.hidden_states)
    for before, after in zip(reference.hidden_states, out.hidden_states, strict=True):
        _assert_close(before, after)


# name -> (blocks, norms folded per block, LayerScales folded per block, gate/up stacked)
EXPECTED = {"tiny-bert": (2, 0, 0, 0), "tiny-vit": (2, 2, 0, 0), "tiny-dinov2": (2, 2, 2, 0),
            "tiny-dinov2-swiglu": (2, 2, 2, 1)}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_fused_encoder_gives_the_same_outputs_and_counts(name):
    model = _model(name)
    inputs = _inputs(model)
    reference = _outputs(model, inputs).last_hidden_state
    originals = list(model.module.modules())
    fused = fuse(model)
    _assert_same_outputs(model, fused, inputs)
    blocks, norms, scales, gate_up = EXPECTED[name]
    report = fused.meta["fusion"]
    assert report["encoder_blocks"] == report["qkv_fused"] == blocks and report["blocks"] == 0
    assert report["norms_folded"] == norms * blocks
    assert report["layer_scales_folded"] == scales * blocks
    assert report["gate_up_fused"] == gate_up * blocks
    assert report["prepacked"] == (4 * blocks if packing_available() else 0)
    assert bool(report["left_apart"]) == (name == "tiny-bert")  # BERT's post-norms stay
    # the input model is untouched: its own modules, the same outputs
    assert list(model.module.modules()) == originals
    assert torch.equal(_outputs(model, inputs).last_hidden_state, reference)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_bert_padded_batch_matches_transformers_masks(implementation):
    model = _perturbed(load_model("tiny-bert"))
    model.module.set_attn_implementation(implementation)
    fused = fuse(model, prepack=False)
    inputs = _inputs(model)
    _assert_same_outputs(model, fused, inputs)
    alone = {k: v[2:, :6] for k, v in inputs.items()}  # the padded sequence without its padding
    _assert_close(_outputs(fused, alone).last_hidden_state[0],
                  _outputs(fused, inputs).last_hidden_state[2, :6])


def test_hidden_states_are_recorded_once_whoever_asked_first():
    model = _model("tiny-vit")
    inputs = _inputs(model)
    before = _outputs(model, inputs)  # the input model installs its hooks and is marked
    fused = fuse(model)
    assert len(_outputs(fused, inputs).hidden_states) == len(before.hidden_states) == 3
    assert len(_outputs(model, inputs).hidden_states) == 3  # no second set on the input model


def test_folded_weights_are_the_fused_models_own():
    model = _model("tiny-dinov2")
    fused = fuse(model, prepack=False)
    block = fused.module.encoder.layer[0]
    assert isinstance(block, FusedDinov2Block) and isinstance(block, Dinov2Layer)  # hooks see it
    assert isinstance(block.norm1, LayerNormalize) and block.norm1.weight is None
    original = model.module.encoder.layer[0]
    assert block.mlp.fc1.weight.data_ptr() != original.mlp.fc1.weight.data_ptr()
    with torch.no_grad():
        block.mlp.fc2.weight.mul_(2)  # changing the fused copy's weight changes its output
    inputs = _inputs(model)
    before, after = _outputs(model, inputs), _outputs(fused, inputs)
    assert float((before.last_hidden_state - after.last_hidden_state).abs().max()) > 1e-3


def test_a_packed_integer_product_keeps_the_norm_and_says_so():
    model = _model("tiny-vit")
    for layer in model.module.layers:
        fc1 = layer.mlp.fc1
        layer.mlp.fc1 = QuantLinear.from_quantized(quantize_rtn(fc1.weight.detach(),
                                                                INT8_PER_CHANNEL), fc1.bias)
    fused = fuse(model)
    report = fused.meta["fusion"]
    assert report["norms_folded"] == 2  # norm1 into q/k/v; norm2 stays before the integers
    assert report["left_apart"] == [f"encoder block {i} norms: 1 LayerNorm affine kept (the "
                                    "product after it is not float)" for i in range(2)]
    _assert_same_outputs(model, fused, _inputs(model))


@pytest.fixture(scope="module")
def dinov2_llava() -> LoadedModel:
    """medvlm's code on a tiny random DINOv2 tower at 56 pixels (16 image tokens, one block)."""
    return _perturbed(build_medvlm(seed=0, tiny=True, vision=PretrainedTower(image_size=56)))


def _logits(model: LoadedModel) -> torch.Tensor:
    with torch.inference_mode():
        return model.module(**prompt_inputs(model, make_sample())).logits


def test_llava_fuses_its_dinov2_tower_and_language_model(dinov2_llava):
    reference = _logits(dinov2_llava)
    original_block = dinov2_llava.module.model.vision_tower.encoder.layer[0]
    fused = fuse(dinov2_llava)
    report = fused.meta["fusion"]
    language_blocks = dinov2_llava.module.config.text_config.num_hidden_layers
    assert report["tower_blocks"] == 1 and report["blocks"] == language_blocks
    assert report["qkv_fused"] == language_blocks + 1
    assert report["layer_scales_folded"] == 2 and not report["left_apart"]
    assert isinstance(fused.module.model.vision_tower.encoder.layer[0], FusedDinov2Block)
    assert dinov2_llava.module.model.vision_tower.encoder.layer[0] is original_block
    _assert_close(reference, _logits(fused))
    assert torch.equal(_logits(dinov2_llava), reference)


def test_llava_with_a_clip_tower_says_it_left_the_tower(tiny_llava):
    fused = fuse(tiny_llava)
    assert fused.meta["fusion"]["left_apart"] == [
        "vision tower: its clip_vision_model blocks are not fused (tower fusion knows ViTLayer "
        "and Dinov2Layer)"]
    assert fused.module.model.vision_tower is tiny_llava.module.model.vision_tower


KNOBS = {"resolution": lambda m: with_resolution(m, image_size=84),
         "stride": lambda m: with_patch_stride(m, patch=8, image_size=56),
         "tome": lambda m: with_token_merging(m, r=3)}


@pytest.mark.parametrize("knob", list(KNOBS))
def test_vision_knobs_and_fusion_compose_in_either_order(dinov2_llava, knob):
    apply = KNOBS[knob]
    reference = _logits(apply(dinov2_llava))
    knob_then_fuse, fuse_then_knob = fuse(apply(dinov2_llava)), apply(fuse(dinov2_llava))
    _assert_close(reference, _logits(knob_then_fuse))
    _assert_close(reference, _logits(fuse_then_knob))
    notes = knob_then_fuse.meta["fusion"]["left_apart"]
    assert notes == (["vision tower q/k/v: ToMe's merging blocks compute q, k and v apart "
                      "(three slices of the stacked product)"] if knob == "tome" else [])


def test_bare_dinov2_fuses_after_token_merging():
    model = _model("tiny-dinov2")
    merged = with_token_merging(model, r=2)
    inputs = _inputs(model)
    with torch.inference_mode():
        reference = merged.module(**inputs).last_hidden_state
        out = fuse(merged).module(**inputs).last_hidden_state
    assert out.shape[1] == 17 - 2 * 2
    _assert_close(reference, out)


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-bert"])
def test_fusing_an_encoder_twice_is_refused(name):
    with pytest.raises(UserInputError, match="already fused"):
        fuse(fuse(load_model(name)))


def test_unknown_family_and_bert_decoder_are_refused():
    with pytest.raises(UserInputError, match="gpt2.*llama, qwen2, llava.*bert, vit, dinov2"):
        fuse(load_model("tiny-gpt2"))
    decoder = load_model("tiny-bert")
    for layer in decoder.module.encoder.layer:
        layer.is_decoder = True
    with pytest.raises(UserInputError, match="BERT decoder"):
        fuse(decoder)


@pytest.mark.slow
@pytest.mark.pretrained
def test_fused_medvlm_scores_medvqa2_questions_alike():
    from mfmaccel.evaluate.run import vqa_samples
    from mfmaccel.evaluate.vqa import answer_scores

    medvlm = load_model("medvlm")
    fused = fuse(medvlm)
    assert fused.meta["fusion"]["tower_blocks"] == 12
    assert fused.meta["fusion"]["layer_scales_folded"] == 24
    merged, fused_merged = with_token_merging(medvlm, r=4), with_token_merging(fused, r=4)
    for sample in vqa_samples(None, "test", limit=2, benchmark="medvqa2"):
        assert answer_scores(fused, sample) == pytest.approx(answer_scores(medvlm, sample),
                                                             abs=1e-4)
        assert answer_scores(fused_merged, sample) == pytest.approx(
            answer_scores(merged, sample), abs=1e-4)

"""Integer-only execution of medvlm's DINOv2 tower: LayerScale folded exactly, the int16 GELU
unit within I-BERT's bound and within int32, hidden states close to float on real medical
images through medvlm's own processor, VQA through the integer tower, and clear errors for
towers and inputs it has no program for."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional

from mfmaccel.data.medvqa import load_medvqa
from mfmaccel.errors import UserInputError
from mfmaccel.finetune.data import pixel_tensor
from mfmaccel.hw.intexec.dinov2 import IntDinov2, convert_dinov2, dinov2_parts, layer_scaled
from mfmaccel.hw.intexec.linear import INT16, IntLinear
from mfmaccel.hw.intexec.quality import integer_tower, vision_agreement
from mfmaccel.hw.intexec.vit import IntViT, WideGelu
from mfmaccel.hw.intops import INT8, INT32, IGelu
from mfmaccel.models import load_model
from mfmaccel.models.medvlm import TINY_PRETRAINED, build_medvlm


@pytest.fixture(scope="module")
def dinov2_vlm():
    """The tiny medvlm on a random one-layer DINOv2, its LayerScale lambdas spread over four
    decades as in the real ViT-S/14 (0.002 to 11; random init leaves them all at 1, where a
    missing fold would go unnoticed)."""
    model = build_medvlm(seed=0, tiny=True, vision=TINY_PRETRAINED)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in model.module.model.vision_tower.encoder.layer:
            for scale in (layer.layer_scale1, layer.layer_scale2):
                exponent = torch.empty(len(scale.lambda1)).uniform_(-2.5, 1, generator=generator)
                scale.lambda1.copy_(10**exponent)
    return model


@pytest.fixture(scope="module")
def images(dinov2_vlm) -> torch.Tensor:
    samples = load_medvqa("train", per_source=2)
    return pixel_tensor(dinov2_vlm.processor, [s.image for s in samples])


def test_layer_scale_folds_exactly_in_float64(dinov2_vlm) -> None:
    layer = dinov2_vlm.module.model.vision_tower.encoder.layer[0]
    parts = dinov2_parts(layer)
    attention_in = torch.randn(3, 5, layer.attention.o_proj.in_features, dtype=torch.float64)
    mlp_in = torch.randn(3, 5, layer.mlp.fc2.in_features, dtype=torch.float64)
    with torch.no_grad():
        for folded, linear, scale, x in (
                (parts.attention_out, layer.attention.o_proj, layer.layer_scale1, attention_in),
                (parts.output, layer.mlp.fc2, layer.layer_scale2, mlp_in)):
            reference = nn.functional.linear(x, linear.weight.double(), linear.bias.double()) \
                * scale.lambda1.double()
            assert folded.weight.dtype == torch.float64
            # the same products, associated differently: float64 rounding only
            torch.testing.assert_close(folded(x), reference, rtol=1e-12, atol=1e-14)
    layer_free = nn.Linear(4, 3, bias=False)
    assert layer_scaled(layer_free, torch.ones(3)).bias is None


def test_wide_gelu_tracks_gelu_and_stays_within_int32() -> None:
    scale = 8 / INT16.high  # an int16 GELU input spanning +-8, as DINOv2's fc1 outputs do
    unit = WideGelu.build(scale)
    q = torch.arange(INT16.low + 1, INT16.high + 1)  # every int16 input, the extremes too
    out = unit(q)
    assert out.dtype == torch.long and int(out.abs().max()) <= INT32.high
    error = (out.double() * unit.scale_out - functional.gelu(q.double() * scale)).abs()
    assert float(error.max()) < 0.025  # I-BERT's erf bound, as the int8 unit's
    # the int8 unit on the same range: its input rounding adds to the erf's error
    int8_unit = IGelu.build(8 / INT8.high)
    int8_error = (int8_unit(torch.round(q * scale / (8 / INT8.high)).long()).double()
                  * int8_unit.scale_out - functional.gelu(q.double() * scale)).abs()
    assert float(error.mean()) < float(int8_error.mean())


@torch.inference_mode()
def test_integer_dinov2_tracks_float_on_real_images(dinov2_vlm, images) -> None:
    tower = dinov2_vlm.module.model.vision_tower
    stand_in = integer_tower(tower, [images[:8]])
    program = stand_in.program
    assert isinstance(program, IntDinov2)
    states = program.hidden_states(images[8:])
    assert all(h.dtype == torch.long and int(h.abs().max()) <= INT16.high for h, _ in states)
    linears = [program.patches.linear] + [
        unit for layer in program.layers
        for unit in (layer.attention.query, layer.attention.key, layer.attention.value,
                     layer.attention_out, layer.intermediate, layer.output)]
    assert all(isinstance(unit, IntLinear) and unit.weight.dtype == torch.long
               and int(unit.weight.abs().max()) <= INT8.high for unit in linears)
    assert program.cls_position.dtype == torch.long
    integer = stand_in(images[8:]).hidden_states
    reference = tower(images[8:], output_hidden_states=True).hidden_states
    assert len(integer) == len(reference) == 1 + len(tower.encoder.layer)
    cosine = functional.cosine_similarity(reference[-1].double(), integer[-1].double(), dim=-1)
    # one layer of small random weights, so little for errors to compound through: measured
    # mean 0.99988, min 0.9993 (without the LayerScale fold: 0.935, min 0.61). The real
    # 12-layer ViT-S/14 keeps about 0.997 on medvqa2 (docs/hw.md), which one layer must beat.
    assert float(cosine.mean()) > 0.999 and float(cosine.min()) > 0.995
    with pytest.raises(UserInputError, match="built for 28x28"):
        program.hidden_states(functional.interpolate(images[8:10], size=(42, 42)))


def test_vqa_runs_through_the_integer_dinov2_and_leaves_the_model_alone(dinov2_vlm) -> None:
    tower = dinov2_vlm.module.model.vision_tower
    record = vision_agreement(dinov2_vlm, questions=4, calibration=4)
    assert record.tower == "Dinov2Model" and record.benchmark == "medvqa"
    assert record.questions == 4 and record.calibration_images == 4
    assert 0 <= record.integer_accuracy <= 1 and record.feature_cosine > 0.99
    assert dinov2_vlm.module.model.vision_tower is tower


def test_each_tower_gets_its_program_and_others_are_named() -> None:
    hybrid = load_model("medvlm-tiny").module.model.vision_tower
    images = torch.randn(2, 3, 64, 64)
    assert isinstance(integer_tower(hybrid, [images]).program, IntViT)  # medvlm-v1's program
    with pytest.raises(UserInputError, match="DINOv2 .* or a ViT-Hybrid"):
        integer_tower(load_model("tiny-llava").module.model.vision_tower, [])
    import transformers as tf

    swiglu = tf.Dinov2Model(tf.Dinov2Config(hidden_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, use_swiglu_ffn=True))
    with pytest.raises(UserInputError, match="SwiGLU"):
        convert_dinov2(swiglu, [])

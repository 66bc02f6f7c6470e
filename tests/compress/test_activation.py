"""W8A8: int8 activations with int32 accumulation, per token and per calibrated tensor."""

from __future__ import annotations

import pytest
import torch

from mfmaccel.compress.calibration import calibrate_activations, calibration_batches
from mfmaccel.compress.quantize import quantize_model, uniform_plan
from mfmaccel.errors import UserInputError
from mfmaccel.models import load_model
from mfmaccel.models.loader import save_model
from mfmaccel.runtime.activation import int8_matmul, per_token_scale, quantize_activations
from mfmaccel.runtime.grid import QuantSpec, quantize_rtn
from mfmaccel.runtime.linear import QuantLinear

INT8 = QuantSpec(8, None, True)


def _layer(seed: int = 0) -> QuantLinear:
    torch.manual_seed(seed)
    return QuantLinear.from_quantized(quantize_rtn(torch.randn(24, 40), INT8), torch.randn(24))


def test_int8_matmul_accumulates_exactly_even_where_fp32_cannot() -> None:
    extreme = torch.full((3, 2048), -127, dtype=torch.int8)
    weight = torch.full((5, 2048), -127, dtype=torch.int8)
    assert (int8_matmul(extreme, weight) == 127 * 127 * 2048).all()  # 33,030,144 > 2**24
    torch.manual_seed(0)
    x = torch.randint(-127, 128, (7, 96), dtype=torch.int8)
    w = torch.randint(-127, 128, (11, 96), dtype=torch.int8)
    assert torch.equal(int8_matmul(x, w), x.long() @ w.long().t())


def test_activation_rounding_saturates_and_keeps_symmetry() -> None:
    x = torch.tensor([[0.0, 1.0, -1.0, 3.0, -3.0]])
    q = quantize_activations(x, torch.tensor(1 / 127))
    assert q.tolist() == [[0, 127, -127, 127, -127]]
    assert float(per_token_scale(x)) == pytest.approx(3 / 127)


def test_w8a8_layer_computes_integer_products_then_one_rescale() -> None:
    layer = _layer()
    x = torch.randn(2, 3, 40)
    reference = layer(x)  # weight-only int8
    layer.set_activations("token")
    out = layer(x)
    weight, w_scale = layer._int8()
    flat = x.reshape(-1, 40)
    q_x = quantize_activations(flat, per_token_scale(flat))
    exact = (q_x.long() @ weight.long().t()).double() * per_token_scale(flat).double() \
        * w_scale.double() + layer.bias.double()
    assert torch.allclose(out.reshape(-1, 24).double(), exact, atol=1e-4)
    relative = (out - reference).norm() / reference.norm()
    assert 0 < relative < 0.02  # int8 inputs cost a little, not nothing


def test_per_tensor_scale_is_a_constant_and_clips_beyond_it() -> None:
    layer = _layer()
    layer.set_activations("tensor", 0.5 / 127)
    step = float(layer.act_scale)
    assert step == pytest.approx(0.5 / 127, rel=1e-3)  # kept at fp16, as stored
    x = torch.randn(4, 40)
    weight, w_scale = layer._int8()
    levels = torch.round(x / step).clamp(-127, 127)  # beyond +-0.5: saturated
    expected = torch.nn.functional.linear(levels * step, weight.float() * w_scale[:, None],
                                          layer.bias)
    assert torch.allclose(layer(x), expected, atol=1e-4)


def test_only_int8_channel_weights_take_int8_activations() -> None:
    torch.manual_seed(0)
    layer = QuantLinear.from_quantized(quantize_rtn(torch.randn(8, 64), QuantSpec(4, 32)))
    with pytest.raises(UserInputError, match="int8-c-sym"):
        layer.set_activations("token")
    with pytest.raises(UserInputError, match="unknown activation"):
        _layer().set_activations("channel")
    model = load_model("tiny-llama")
    with pytest.raises(UserInputError, match="int8-c-sym"):
        quantize_model(model, uniform_plan(model.module, QuantSpec(4, 16), activations="token"))
    with pytest.raises(UserInputError, match="calibration"):
        quantize_model(model, uniform_plan(model.module, INT8, activations="tensor"))


@pytest.mark.parametrize("mode", ["token", "tensor"])
def test_w8a8_model_saves_reloads_and_stays_close(mode: str, tmp_path) -> None:
    model = load_model("tiny-llama")
    ids = torch.randint(0, model.module.config.vocab_size, (1, 24))
    with torch.inference_mode():
        reference = model.module(input_ids=ids).logits
    batches = calibration_batches(model.tokenizer, 512, window=128)
    quantize_model(model, uniform_plan(model.module, INT8, activations=mode), batches)
    with torch.inference_mode():
        w8a8 = model.module(input_ids=ids).logits
    assert (w8a8 - reference).abs().max() > 0
    assert torch.nn.functional.cosine_similarity(w8a8.flatten(), reference.flatten(), 0) > 0.99
    save_model(model, tmp_path / "w8a8")
    again = load_model(str(tmp_path / "w8a8"))
    assert again.meta["quantization"]["activations"] == mode
    with torch.inference_mode():
        assert torch.equal(again.module(input_ids=ids).logits, w8a8)


def test_calibrate_refuses_a_model_without_int8_layers() -> None:
    model = load_model("tiny-llama")
    with pytest.raises(UserInputError, match="int8-c-sym"):
        calibrate_activations(model.module, "token")


def _with_outlier_channel(seed: int = 0):
    """tiny-llama whose normed hidden states carry one channel 60x larger than the rest, as
    real LLMs do."""
    model = load_model("tiny-llama", seed=seed)
    with torch.no_grad():
        for layer in model.module.model.layers:
            layer.input_layernorm.weight[3] *= 60
            layer.post_attention_layernorm.weight[5] *= 60
    return model


def test_smoothing_keeps_float_outputs_and_rescues_per_tensor_int8() -> None:
    from mfmaccel.compress.smooth import smooth_llama

    ids = torch.randint(0, 250, (1, 32))
    batches = calibration_batches(load_model("tiny-llama").tokenizer, 1024, window=128)
    model = _with_outlier_channel()
    with torch.inference_mode():
        reference = model.module(input_ids=ids).logits
    smooth_llama(model.module, batches, 0.5)
    with torch.inference_mode():
        assert torch.allclose(model.module(input_ids=ids).logits, reference, atol=1e-4)

    def w8a8_error(smoothing: float | None) -> float:
        quantized = _with_outlier_channel()
        plan = uniform_plan(quantized.module, INT8, activations="tensor", smoothing=smoothing)
        quantize_model(quantized, plan, batches)
        with torch.inference_mode():
            return float((quantized.module(input_ids=ids).logits - reference).norm())

    assert w8a8_error(0.5) < 0.5 * w8a8_error(None)


def test_smoothing_refuses_non_llama_blocks_and_bad_alpha() -> None:
    from mfmaccel.compress.smooth import smooth_llama

    gpt2 = load_model("tiny-gpt2")
    with pytest.raises(UserInputError, match="Llama-family"):
        smooth_llama(gpt2.module, [torch.randint(0, 250, (1, 16))])
    with pytest.raises(UserInputError, match="alpha"):
        smooth_llama(load_model("tiny-llama").module, [], 1.5)

"""GPTQ for a VLM calibrated on what its language model reads in VQA: embedded image tokens,
question and answer (`vqa_calibration_batches`), fed to the blocks as `inputs_embeds`."""

from __future__ import annotations

import torch

from mfmaccel.compress.blocks import capture_blocks
from mfmaccel.compress.calibration import vqa_calibration_batches
from mfmaccel.compress.quantize import quantize_model, uniform_plan
from mfmaccel.compress.search import parse_spec
from mfmaccel.data.medvqa import load_medvqa
from mfmaccel.evaluate.vqa import answer_scores
from mfmaccel.models import load_model


def test_batches_are_the_embedded_prompts_with_their_image_tokens() -> None:
    model = load_model("medvlm-tiny")
    config = model.module.config
    batches = vqa_calibration_batches(model, load_medvqa("train", per_source=1), tokens=100)
    assert sum(b.shape[1] for b in batches) >= 100
    assert all(b.is_floating_point() and b.shape[-1] == config.text_config.hidden_size
               for b in batches)
    # the blocks are entered with exactly these embeddings (image features included)
    cache = capture_blocks(model.module, batches)
    torch.testing.assert_close(cache.inputs[0][0], batches[0])


def test_gptq_on_vqa_batches_gives_a_model_that_still_ranks_answers() -> None:
    model = load_model("medvlm-tiny")
    sample = load_medvqa("val", per_source=1)[0]
    before = answer_scores(model, sample)
    batches = vqa_calibration_batches(model, load_medvqa("train", per_source=1), tokens=200)
    quantize_model(model, uniform_plan(model.module, parse_spec("int8-g16"), "gptq"), batches)
    after = answer_scores(model, sample)
    # int8 weights move each candidate's log-likelihood by a few thousandths of a nat
    torch.testing.assert_close(torch.tensor(after), torch.tensor(before), rtol=0, atol=0.05)
    assert type(model.module.model.language_model.layers[0].mlp.down_proj).__name__ == (
        "QuantLinear")


def test_gptq_calibrates_a_vlm_on_vqa_and_a_causal_lm_on_text() -> None:
    from mfmaccel.compress.calibration import gptq_calibration_batches

    vlm = gptq_calibration_batches(load_model("medvlm-tiny"), tokens=64)
    text = gptq_calibration_batches(load_model("tiny-llama"), tokens=64)
    assert vlm[0].is_floating_point() and vlm[0].dim() == 3
    assert not text[0].is_floating_point() and text[0].dim() == 2

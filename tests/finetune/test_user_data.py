"""A user's HF LLaVA folder and VQA-RAD-format data go through the same command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.finetune import finetune_medvlm, load_config, main_finetune
from mfmaccel.models import load_model
from mfmaccel.models.loader import save_model

from .conftest import fast_config

VQA_RAD = Path(__file__).parents[1] / "fixtures" / "vqa_rad_tiny"


@pytest.fixture(scope="module")
def user_llava(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("user") / "llava"
    return save_model(load_model("tiny-llava"), folder)


def test_vqa_rad_folder_through_finetune_medvlm(user_llava):
    config = fast_config(base=str(user_llava), data=str(VQA_RAD))
    model, record = finetune_medvlm(config, log=lambda _: None)
    assert record.data["phase_3"].startswith(str(VQA_RAD))
    assert record.data["val"].startswith(str(VQA_RAD))
    assert record.phases[-1].val["n"] >= 1
    assert not any("lora_" in name for name, _ in model.module.named_parameters())


def test_main_finetune_writes_a_loadable_folder(user_llava, tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text(json.dumps(fast_config().model_dump(exclude={"seed", "base", "data"})))
    out = tmp_path / "out"
    manifest = main_finetune(config=config, out=out, data=VQA_RAD, base=user_llava,
                             log=lambda _: None)
    assert manifest["test"]["n"] >= 1
    assert "--base" in manifest["command"] and "--data" in manifest["command"]
    assert (out / "finetune.json").is_file()
    reloaded = load_model(str(out))
    assert reloaded.kind == "vlm"


def test_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("alignment: {steps: 1, lr: 1.0, projector_lr: 1.0, tower_lr: 1.0}\nbogus: 1\n")
    with pytest.raises(UserInputError, match="unknown key 'bogus'"):
        load_config(bad)
    with pytest.raises(UserInputError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad.write_text("image_size: 100\n")
    with pytest.raises(UserInputError, match="image_size.*multiple of 32"):
        load_config(bad)

"""A user's HF LLaVA folder and VQA-RAD-format data go through the same command."""

from __future__ import annotations

import json
import shutil
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
    bad.write_text("tower: vit-hybrid\nimage_size: 100\n")
    with pytest.raises(UserInputError, match="image_size 100 is not a multiple of the "
                       "vit-hybrid tower's 32-pixel patch"):
        load_config(bad)
    bad.write_text("image_size: 100\n")
    with pytest.raises(UserInputError, match="dinov2-s14 tower's 14-pixel patch"):
        load_config(bad)


def without_test_split(tmp_path: Path) -> Path:
    """A copy of the VQA-RAD fixture whose test questions are gone (train only)."""
    folder = tmp_path / "train-only"
    shutil.copytree(VQA_RAD, folder)
    records = folder / "VQA_RAD Dataset Public.json"
    kept = [r for r in json.loads(records.read_text()) if not r["phrase_type"].startswith("test")]
    records.write_text(json.dumps(kept))
    return folder


def test_train_split_standing_in_for_test_is_said_everywhere(user_llava, tmp_path):
    """No test split: the log, the manifest and the CLI table all say the figures are on the
    training questions."""
    from typer.testing import CliRunner

    from mfmaccel.cli import app

    config = tmp_path / "recipe.yaml"
    config.write_text(json.dumps(fast_config().model_dump(exclude={"seed", "base", "data"})))
    out, data = tmp_path / "out", without_test_split(tmp_path)
    result = CliRunner().invoke(app, ["finetune", "--config", str(config), "--out", str(out),
                                      "--data", str(data), "--base", str(user_llava)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "no test split in the data folder" in text
    assert "of the train split (no test split: trained data, not a held-out test)" in text
    manifest = json.loads((out / "finetune.json").read_text())
    assert manifest["test_split"] == "train" and manifest["test"]["split"] == "train"
    assert "trained on" in manifest["test"]["note"]


def test_a_real_test_split_is_named_too(tmp_path):
    from mfmaccel.finetune.main import test_split

    test, _, split = test_split(fast_config(data=str(VQA_RAD)), None)
    assert split == "test" and {s.split for s in test} == {"test"}
    test, _, split = test_split(fast_config(data=str(without_test_split(tmp_path))), None)
    assert split == "train" and {s.split for s in test} == {"train"}

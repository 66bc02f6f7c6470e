"""medvlm on a pretrained (here: tiny random DINOv2) tower, fine-tuned on medvqa2: the frozen
tower's features are cached, it does not ship with the trained parts, and the saved parts
rebuild the same model."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from mfmaccel.data.medvqa import load_medcaptions2, load_medvqa2
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.vqa import vqa_prompt
from mfmaccel.finetune.config import PhaseConfig, WarmupConfig, validate_config
from mfmaccel.finetune.instructions import instruction_examples
from mfmaccel.finetune.run import finetune_model
from mfmaccel.models.medvlm import TINY_PRETRAINED, build_medvlm, load_medvlm
from mfmaccel.models.medvlm_parts import MANIFEST, PARTS, save_trained_parts

from .conftest import FAST_PHASE, fast_config

FROZEN = {**FAST_PHASE, "train_tower": False}


def v2_config(**overrides):
    settings = {"benchmark": "medvqa2", "train_limit": 6, "train_per_source": None,
                "warmup": WarmupConfig(steps=0), "alignment": PhaseConfig(**FROZEN),
                "instruction": PhaseConfig(**FROZEN), "vqa": PhaseConfig(**FROZEN)}
    return fast_config(**{**settings, **overrides})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    lines: list[str] = []
    model = build_medvlm(seed=0, tiny=True, vision=TINY_PRETRAINED)
    model, record = finetune_model(model, v2_config(), log=lines.append)
    folder = tmp_path_factory.mktemp("weights") / "medvlm"
    save_trained_parts(model, folder, {"command": "test", "config": v2_config().model_dump()})
    return model, record, folder, lines


def test_the_frozen_tower_is_cached_and_not_shipped(trained):
    model, record, folder, lines = trained
    assert any("tower features of 6 images cached" in line for line in lines)
    assert [p.name for p in record.phases] == ["alignment", "instruction", "vqa"]
    assert all("tower" not in p.trained for p in record.phases)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert PARTS["vision_tower"] not in manifest["files"]
    assert manifest["vision"]["tower"] == "dinov2-s14"


def test_saved_parts_rebuild_the_trained_model(trained):
    model, _, folder, _ = trained
    loaded = load_medvlm(folder)
    image = Image.new("RGB", (50, 40), (90, 20, 160))
    inputs = model.processor(images=image, text=vqa_prompt(model.processor, "Is there a tumour?"),
                             return_tensors="pt")
    with torch.inference_mode():
        expected = model.module(**inputs).logits
        got = loaded.module(**inputs).logits
    assert torch.allclose(got, expected, atol=1e-2)  # parts are stored in fp16


def test_captions_and_instructions_carry_the_tumour_label() -> None:
    captions = load_medcaptions2("train", limit=40)
    samples = load_medvqa2("train", limit=40)
    assert [c.sample.question for c in captions] == [s.question for s in samples]
    tumours = [c for c in captions if c.sample.question_type == "tumour"]
    assert tumours, "the first 40 train samples hold tumour questions"
    for c in tumours:
        assert c.facts.tumour == c.sample.answer
        assert c.caption == ("MRI of the head; a tumour." if c.sample.answer == "yes"
                             else "MRI of the head; no tumour.")
    for c in captions:
        if c.sample.question_type in ("modality", "organ"):
            assert getattr(c.facts, c.sample.question_type) == c.sample.answer
    examples = instruction_examples(tumours[:1], seed=0)
    short = [e for e in examples if e.target in ("yes", "no")]
    assert [e.target for e in short] == [tumours[0].sample.answer]


def test_the_warmup_is_refused_with_medvqa2() -> None:
    with pytest.raises(UserInputError, match="warmup.steps: 0 with benchmark medvqa2"):
        validate_config({"benchmark": "medvqa2", "warmup": {"steps": 5}})

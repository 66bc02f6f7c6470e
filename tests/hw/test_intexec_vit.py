"""Integer-only execution of medvlm's ViT-Hybrid vision tower: convolutions exact as integer
GEMMs, hidden states close to float on real medical images, VQA through the integer tower, and
clear errors for towers it has no units for."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional

from mfmaccel.data.medvqa import load_medvqa
from mfmaccel.errors import UserInputError
from mfmaccel.finetune.data import pixel_tensor
from mfmaccel.hw.intexec.quality import vision_agreement
from mfmaccel.hw.intexec.vit import IntConv, IntegerTower, convert_vit
from mfmaccel.models import load_model


@pytest.fixture(scope="module")
def tiny_vlm():
    return load_model("medvlm-tiny")


@pytest.fixture(scope="module")
def images(tiny_vlm) -> torch.Tensor:
    samples = load_medvqa("train", per_source=2)
    return pixel_tensor(tiny_vlm.processor, [s.image for s in samples])


def test_integer_convolution_matches_float_within_a_step() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False).double()
    norm = nn.BatchNorm2d(6).double().eval()
    with torch.no_grad():
        norm.running_mean.uniform_(-0.2, 0.2)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.1, 0.1)
    x = torch.randint(-127, 128, (2, 4, 9, 9))
    scale_in = 0.02
    with torch.no_grad():
        reference = torch.relu(norm(conv(x.double() * scale_in)))
    scale_out = float(reference.abs().max()) / 127
    unit = IntConv.build(conv, norm, scale_in, scale_out, relu=True)
    out = unit(x)
    assert out.dtype == torch.long and out.shape == reference.shape and int(out.min()) >= 0
    # int8 weights: a few output steps at most, far below the output's range
    assert float((out.double() * scale_out - reference).abs().max()) < 4 * scale_out


def test_max_pool_of_integers_is_exact() -> None:
    from mfmaccel.hw.intexec.vit import max_pool

    x = torch.randint(-(1 << 15), 1 << 15, (1, 3, 8, 8))
    pool = nn.MaxPool2d(3, stride=2, padding=1)
    assert torch.equal(max_pool(x, pool), functional.max_pool2d(x.double(), 3, 2, 1).long())


@torch.inference_mode()
def test_integer_tower_tracks_float_on_real_images(tiny_vlm, images) -> None:
    tower = tiny_vlm.module.model.vision_tower
    program = convert_vit(tower, [images[:8]])
    states = program.hidden_states(images[8:])
    assert all(h.dtype == torch.long and int(h.abs().max()) < 1 << 15 for h, _ in states)
    integer = IntegerTower(program, 0)(images[8:]).hidden_states
    reference = tower(images[8:], output_hidden_states=True).hidden_states
    assert len(integer) == len(reference)
    cosine = functional.cosine_similarity(reference[-1].double(), integer[-1].double(), dim=-1)
    assert float(cosine.mean()) > 0.95


def test_vqa_runs_through_the_integer_tower_and_leaves_the_model_alone(tiny_vlm) -> None:
    tower = tiny_vlm.module.model.vision_tower
    calibrated, scored = [], []
    record = vision_agreement(tiny_vlm, questions=5, calibration=4,
                              calibration_progress=lambda *c: calibrated.append(c),
                              progress=lambda *c: scored.append(c))
    assert record.questions == 5 and record.calibration_images == 4
    # progress: the calibration batch, then every question twice (float, then integer); that
    # it changes no figure is checked on the decoder and encoder programs (test_intexec.py)
    assert calibrated[-1][0] == calibrated[-1][1]
    assert scored[-1] == (10, 10) and [d for d, _ in scored] == sorted(d for d, _ in scored)
    assert 0 <= record.integer_accuracy <= 1 and 0 <= record.float_accuracy <= 1
    assert record.feature_cosine > 0.9
    assert tiny_vlm.module.model.vision_tower is tower  # the float model is untouched


def test_towers_without_an_integer_program_are_named() -> None:
    with pytest.raises(UserInputError, match="ViT-Hybrid"):
        convert_vit(load_model("tiny-llava").module.model.vision_tower, [])
    with pytest.raises(UserInputError, match="not a vision-language model"):
        vision_agreement(load_model("tiny-llama"))


def test_cli_intexec_runs_a_vlm_tower_integer_only(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from mfmaccel.cli import app

    out = tmp_path / "vlm.json"
    result = CliRunner().invoke(app, ["hw", "intexec", "--model", "medvlm-tiny", "--questions",
                                      "3", "--calibration", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["questions"] == 3 and "integer_accuracy" in record

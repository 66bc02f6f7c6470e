"""The trained parts round-trip through weights/<folder>/ and the manifest guards them."""

from __future__ import annotations

import json

import pytest
import torch

from mfmaccel.errors import UserInputError
from mfmaccel.finetune.run import finetune_model
from mfmaccel.models.medvlm import TINY_VISION, load_medvlm
from mfmaccel.models.medvlm_parts import MANIFEST, PARTS, save_trained_parts

from .conftest import fast_config


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from mfmaccel.models.medvlm import build_medvlm

    model, record = finetune_model(build_medvlm(seed=0, tiny=True), fast_config(),
                                   log=lambda _: None)
    folder = tmp_path_factory.mktemp("weights") / "medvlm"
    save_trained_parts(model, folder, {"command": "test", "config": fast_config().model_dump()})
    return model, record, folder


def _logits(module, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    size = TINY_VISION.image_size
    ids = torch.cat([torch.full((1, TINY_VISION.image_tokens), module.config.image_token_id),
                     torch.randint(0, 200, (1, 6))], dim=1)
    with torch.inference_mode():
        return module(input_ids=ids, pixel_values=torch.randn(1, 3, size, size)).logits


def test_record_has_every_phase(saved):
    _, record, _ = saved
    assert [p.name for p in record.phases] == ["warmup", "alignment", "instruction", "vqa"]
    curves = record.curves()
    for key in ("phase1a/tower_fact_loss", "phase1/loss", "phase1/val_acc", "phase2/loss",
                "phase3/val_acc"):
        assert curves[key], key
    probes = record.phases[0].extra
    assert "modality" in probes["train_probe"] and "modality" in probes["val_probe"]
    json.dumps(record.to_dict())


def test_load_medvlm_reproduces_the_trained_model(saved):
    model, _, folder = saved
    manifest = json.loads((folder / MANIFEST).read_text())
    assert set(manifest["files"]) == set(PARTS.values())
    loaded = load_medvlm(folder)
    assert not any("lora_" in name for name, _ in loaded.module.named_parameters())
    # parts are stored in fp16: the same model up to that rounding
    assert torch.allclose(_logits(loaded.module), _logits(model.module), atol=1e-2)


def test_corrupt_or_missing_weights_name_the_fix(saved, tmp_path):
    _, _, folder = saved
    copy = tmp_path / "medvlm"
    copy.mkdir()
    for file in folder.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    tower = copy / PARTS["vision_tower"]
    data = bytearray(tower.read_bytes())
    data[-1] ^= 0xFF
    tower.write_bytes(bytes(data))
    with pytest.raises(UserInputError, match="sha256.*mfmaccel finetune.*git checkout weights/"):
        load_medvlm(copy)
    tower.unlink()
    with pytest.raises(UserInputError, match="missing"):
        load_medvlm(copy)
    with pytest.raises(UserInputError, match="mfmaccel finetune"):
        load_medvlm(tmp_path / "nowhere")


def test_committed_parts_are_reused_only_for_the_same_start_and_settings(saved):
    from mfmaccel.finetune.committed import matching_committed_parts
    from mfmaccel.models.medvlm import build_medvlm

    model, _, folder = saved
    config = fast_config()
    fresh = build_medvlm(seed=0, tiny=True)
    found = matching_committed_parts(fresh, config, folder)
    assert found is not None and found[0] == folder
    assert matching_committed_parts(fresh, fast_config(batch_size=3), folder) is None
    assert matching_committed_parts(build_medvlm(seed=1, tiny=True), config, folder) is None
    assert matching_committed_parts(model, config, folder) is None  # already fine-tuned
    assert matching_committed_parts(fresh, config, folder.parent / "absent") is None


def test_a_finetune_output_folder_loads_by_path(saved):
    """`--model <what finetune wrote>` is medvlm with those parts, like load_medvlm(folder)."""
    from mfmaccel.models import load_model
    from mfmaccel.models.loader import model_kind
    from mfmaccel.models.record import VLM

    _, _, folder = saved
    assert model_kind(str(folder)) == VLM
    by_path = load_model(str(folder))
    # load_model swaps in FewRowsLinear (same math, another summation order)
    assert torch.allclose(_logits(by_path.module), _logits(load_medvlm(folder).module), atol=1e-5)

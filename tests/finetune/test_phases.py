"""Each phase trains what the method says and nothing else; losses go down."""

from __future__ import annotations

import torch

from mfmaccel.data.medvqa import load_medvqa
from mfmaccel.finetune.config import PhaseConfig
from mfmaccel.finetune.data import PhaseData, pixel_tensor
from mfmaccel.finetune.instructions import vqa_examples
from mfmaccel.finetune.phases import run_phase
from mfmaccel.models import load_model
from mfmaccel.models.lora import add_lora, lora_config

from .conftest import fast_config

SAMPLES = load_medvqa("train", seed=0, per_source=1)[:4]


def _data(model) -> PhaseData:
    return PhaseData(pixel_tensor(model.processor, [s.image for s in SAMPLES]),
                     vqa_examples(SAMPLES))


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict, module: torch.nn.Module) -> set[str]:
    after = module.state_dict()
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


def _phase(steps: int, train_tower: bool = True) -> PhaseConfig:
    return PhaseConfig(steps=steps, lr=5e-3, projector_lr=5e-3, tower_lr=5e-3,
                       train_tower=train_tower)


def test_loss_goes_down_on_a_handful_of_samples():
    for model in (load_model("tiny-llava"), load_model("tiny-llava", seed=1)):
        add_lora(model.module, lora_config(4, 8.0))
        config = fast_config(batch_size=4, vqa=_phase(12))
        result, _ = run_phase(model.module, model.processor, "vqa", data=_data(model),
                              config=config)
        assert len(result.losses) == 12
        assert sum(result.losses[-3:]) / 3 < sum(result.losses[:3]) / 3


def test_tiny_medvlm_loss_goes_down(tiny_medvlm):
    config = fast_config(batch_size=4, alignment=_phase(12))
    result, trained = run_phase(tiny_medvlm.module, tiny_medvlm.processor, "alignment",
                                data=_data(tiny_medvlm), config=config)
    assert trained == ["projector", "tower"]
    assert sum(result.losses[-3:]) / 3 < sum(result.losses[:3]) / 3


def test_alignment_leaves_the_language_model_bit_identical(tiny_medvlm):
    module = tiny_medvlm.module
    before = _snapshot(module)
    run_phase(module, tiny_medvlm.processor, "alignment", data=_data(tiny_medvlm),
              config=fast_config(alignment=_phase(2)))
    changed = _changed(before, module)
    assert changed, "phase 1 trained nothing"
    assert all(k.startswith(("model.vision_tower.", "model.multi_modal_projector."))
               for k in changed)
    assert any(k.startswith("model.vision_tower.") for k in changed)
    assert any(k.startswith("model.multi_modal_projector.") for k in changed)
    assert not any(p.requires_grad for p in module.parameters())


def test_instruction_changes_only_lora_projector_and_tower(tiny_medvlm):
    module = tiny_medvlm.module
    add_lora(module, lora_config(4, 8.0))
    for train_tower in (True, False):
        before = _snapshot(module)
        _, trained = run_phase(module, tiny_medvlm.processor, "instruction",
                               data=_data(tiny_medvlm),
                               config=fast_config(instruction=_phase(2, train_tower)))
        changed = _changed(before, module)
        lora = {k for k in changed if "lora_" in k}
        tower = {k for k in changed if "vision_tower" in k}
        projector = {k for k in changed if "multi_modal_projector" in k}
        assert lora and projector
        assert bool(tower) == train_tower
        assert changed == lora | tower | projector
        assert set(trained) == {"projector", "lora"} | ({"tower"} if train_tower else set())

"""Recovery after pruning: LoRA distillation from the unpruned model, merged back."""

from __future__ import annotations

import pytest
import torch

from mfmaccel.compress.calibration import calibration_batches
from mfmaccel.compress.recover import distillation_loss, prune_and_recover
from mfmaccel.errors import UserInputError
from mfmaccel.models import load_model
from mfmaccel.models.loader import save_model


def _kl_to(teacher, student, ids) -> float:
    with torch.inference_mode():
        return float(distillation_loss(student(input_ids=ids).logits,
                                       teacher(input_ids=ids).logits))


def test_distillation_loss_is_zero_only_for_the_same_distribution() -> None:
    logits = torch.randn(2, 5, 11)
    assert float(distillation_loss(logits, logits)) == pytest.approx(0, abs=1e-6)
    assert float(distillation_loss(logits, logits + torch.randn(2, 5, 11))) > 0.01


def test_recovery_brings_the_pruned_model_closer_to_the_original(tmp_path) -> None:
    teacher = load_model("tiny-llama").module
    model = load_model("tiny-llama")
    held_out = calibration_batches(model.tokenizer, 4096, window=128)[-1]
    pruned = load_model("tiny-llama")
    pruned, _ = prune_and_recover(pruned, 512, blocks=1, mlp_fraction=0.25)
    model, report = prune_and_recover(model, 512, blocks=1, mlp_fraction=0.25,
                                      recover_steps=12, recover_tokens=2048)
    assert report.recovery["steps"] == 12 and len(report.recovery["losses"]) == 12
    assert _kl_to(teacher, model.module, held_out) < _kl_to(teacher, pruned.module, held_out)
    assert not any("lora" in name for name, _ in model.module.named_modules())
    assert model.module.config.num_hidden_layers == teacher.config.num_hidden_layers - 1
    save_model(model, tmp_path / "recovered")
    again = load_model(str(tmp_path / "recovered"))
    with torch.inference_mode():
        assert torch.allclose(again.module(input_ids=held_out).logits,
                              model.module(input_ids=held_out).logits, atol=1e-5)


def test_recovery_refuses_a_model_that_is_neither_a_causal_lm_nor_a_vlm() -> None:
    with pytest.raises(UserInputError, match="needs a causal LM or a LLaVA VLM"):
        prune_and_recover(load_model("tiny-vit"), recover_steps=2)

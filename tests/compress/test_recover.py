"""Recovery after pruning: LoRA distillation from the unpruned model, merged back."""

from __future__ import annotations

import json

import pytest
import torch

from mfmaccel.compress.calibration import calibration_batches
from mfmaccel.compress.recover import distillation_loss, prune_and_recover, recovery_targets
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
    pruned, _ = prune_and_recover(pruned, calib_tokens=512, blocks=1, mlp_fraction=0.25)
    model, report = prune_and_recover(model, calib_tokens=512, blocks=1, mlp_fraction=0.25,
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


def _block_weights(module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()
            if ".layers." in name or ".h." in name}


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2", "llava"])
def test_recovery_trains_the_block_projections_of_each_family(arch) -> None:
    """GPT-2's Conv1D c_attn/c_proj/c_fc as well as Llama-style q_proj..down_proj; a LLaVA's
    vision tower and every model's head stay as they were."""
    unrecovered, _ = prune_and_recover(load_model(f"tiny-{arch}"), calib_tokens=512, blocks=1)
    model = load_model(f"tiny-{arch}")
    targets = recovery_targets(model)
    assert targets and all(".layers." in t or ".h." in t for t in targets)
    assert not any("vision" in t or "lm_head" in t for t in targets)
    model, report = prune_and_recover(model, calib_tokens=512, blocks=1, recover_steps=2,
                                      recover_tokens=1024)
    assert len(report.recovery["losses"]) == 2
    assert not any("lora" in name for name, _ in model.module.named_modules())
    before, after = _block_weights(unrecovered.module), _block_weights(model.module)
    assert before.keys() == after.keys()
    changed = [name for name in after if not torch.equal(before[name], after[name])]
    assert changed and all(any(t.rsplit(".", 1)[-1] in n for t in targets) for n in changed)
    frozen = [name for name, p in model.module.named_parameters() if name not in after]
    state = dict(unrecovered.module.named_parameters())
    assert all(torch.equal(state[name], dict(model.module.named_parameters())[name])
               for name in frozen)


def test_prune_with_recovery_on_a_saved_gpt2_folder(tmp_path) -> None:
    """The issue's reproduction: a tiny random GPT-2 folder crashed in peft."""
    from typer.testing import CliRunner

    from mfmaccel.cli import app

    save_model(load_model("tiny-gpt2"), tmp_path / "gpt2")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["prune", "--model", str(tmp_path / "gpt2"), "--blocks",
                                      "1", "--recover-steps", "2", "--recover-tokens", "1024",
                                      "--calib-tokens", "512", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert load_model(str(out)).module.config.n_layer == 1
    report = json.loads((out / "pruning.json").read_text())
    assert report["removed_blocks"] and len(report["recovery"]["losses"]) == 2


class _OpaqueProjection(torch.nn.Module):
    """A projection that is no nn.Linear/Conv1D (as in a family whose layers peft cannot
    adapt)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight)


def test_a_model_without_linear_layers_in_its_blocks_is_refused_before_pruning() -> None:
    model = load_model("tiny-llama")
    for block in model.module.model.layers:
        for owner in (block.self_attn, block.mlp):
            for name, child in list(owner.named_children()):
                if isinstance(child, torch.nn.Linear):
                    setattr(owner, name, _OpaqueProjection(child))
    layers = len(model.module.model.layers)
    with pytest.raises(UserInputError, match="cannot recover 'tiny-llama'.*without "
                                             "--recover-steps"):
        prune_and_recover(model, calib_tokens=512, blocks=1, recover_steps=2)
    assert len(model.module.model.layers) == layers  # nothing pruned

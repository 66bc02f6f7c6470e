"""Structural pruning on tiny real architectures: smaller configs that save, reload and run."""

from __future__ import annotations

import pytest
import torch

from mfmaccel.compress.prune import block_importance, prune_model
from mfmaccel.errors import UserInputError
from mfmaccel.models import load_model
from mfmaccel.models.loader import save_model


@pytest.fixture
def batches():
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(0, 250, (1, 40), generator=generator) for _ in range(2)]


def _logits(model, ids):
    with torch.inference_mode():
        return model.module(input_ids=ids).logits


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_pruned_model_is_smaller_and_reloads_with_transformers(arch, batches, tmp_path):
    model = load_model(f"tiny-{arch}")
    config = model.module.config
    layers, width, kv = (config.num_hidden_layers, config.intermediate_size,
                         config.num_key_value_heads)
    before = model.params
    model, report = prune_model(model, batches, blocks=1, mlp_fraction=0.25, kv_groups=1)
    assert model.params < before and report.params == (before, model.params)
    assert config.num_hidden_layers == layers - 1 == len(report.block_importance) - 1
    assert config.intermediate_size == round(width * 0.75)
    assert config.num_key_value_heads == kv - 1
    ids = torch.randint(0, 250, (1, 16))
    folder = save_model(model, tmp_path / "pruned")
    reloaded = load_model(str(folder))
    assert reloaded.params == model.params
    assert torch.allclose(_logits(model, ids), _logits(reloaded, ids), atol=1e-5)
    # and it still generates with a KV cache (renumbered layers)
    out = reloaded.module.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == 20


def test_a_block_that_does_nothing_is_the_one_removed(batches):
    model = load_model("tiny-llama")
    idle = model.module.model.layers[0]
    with torch.no_grad():  # residual branches off: the block passes its input through
        idle.self_attn.o_proj.weight.zero_()
        idle.mlp.down_proj.weight.zero_()
    scores = block_importance(model.module, batches)
    assert scores[0] == pytest.approx(0, abs=1e-6) and scores[1] > 1e-3
    ids = batches[0]
    reference = _logits(model, ids)
    model, report = prune_model(model, batches, blocks=1)
    assert report.removed_blocks == [0]
    assert torch.allclose(_logits(model, ids), reference, atol=1e-5)


def test_impossible_pruning_is_a_user_error(batches):
    with pytest.raises(UserInputError, match="keep at least 1"):
        prune_model(load_model("tiny-llama"), batches, blocks=99)
    with pytest.raises(UserInputError, match="mlp fraction"):
        prune_model(load_model("tiny-llama"), batches, mlp_fraction=1.5)
    with pytest.raises(UserInputError, match="projections"):
        prune_model(load_model("tiny-gpt2"), batches, mlp_fraction=0.5)

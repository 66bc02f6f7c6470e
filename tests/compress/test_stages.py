"""The `quantize` and `prune` stages in a recipe: measured before/after, saved, resumable."""

from __future__ import annotations

import json

import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.pipeline.recipe import parse_recipe
from mfmaccel.pipeline.runner import run_recipe


def _recipe(stages):
    return parse_recipe({
        "name": "c", "model": "tiny-llama",
        "evaluation": {"tasks": ["ppl"], "ppl_tokens": 200, "speed_tokens": 4},
        "stages": stages,
    })


def test_prune_then_quantize_shrinks_the_model_and_resumes(tmp_path):
    recipe = _recipe([
        {"stage": "prune", "params": {"mlp_fraction": 0.5, "calib_tokens": 256,
                                      "recover_steps": 3, "recover_tokens": 1024}},
        {"stage": "quantize", "params": {"budget_fraction": 0.3, "specs": ["int2-g16", "int4-g16"],
                                         "calib_tokens": 256}},
    ])
    state = run_recipe(recipe, runs_dir=tmp_path, log=lambda _: None)
    prune, quantize = state.stages
    assert prune.after.params < prune.before.params
    assert len(prune.curves["recovery/loss"]) == 3
    assert quantize.after.weight_bytes < quantize.before.weight_bytes / 3
    assert any(key.endswith("/block_kl") for key in quantize.curves)
    assert (tmp_path / "c" / "stages").is_dir()
    from mfmaccel.report import write_report

    page = write_report(tmp_path / "c").read_text()
    assert "Mixed-precision front" in page  # with the uniform baselines drawn on it
    compression = json.loads(next((tmp_path / "c").rglob("compression.json")).read_text())
    assert {u["spec"] for u in compression["uniform"]} == {"int2-g16-asym", "int4-g16-asym"}
    assert 0 < compression["chosen"]["bytes"] <= 0.3 * compression["fp16_bytes"]
    again = run_recipe(recipe, runs_dir=tmp_path, resume=True, log=lambda _: None)
    assert [s.name for s in again.stages] == ["prune", "quantize"]


@pytest.mark.parametrize("params,message", [
    ({"avg_bits": 4, "budget_fraction": 0.3}, "exactly one of"),
    ({"budget_fraction": 0.3, "bits": 4}, "unknown key 'bits'"),
    ({"budget_fraction": 0.3, "activations": "token"}, "need uniform"),
])
def test_bad_quantize_params_fail_before_work(tmp_path, params, message):
    with pytest.raises(UserInputError, match=message):
        _recipe([{"stage": "quantize", "params": params}])

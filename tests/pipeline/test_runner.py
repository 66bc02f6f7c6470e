"""Running recipes on tiny models: metrics before and after every stage, resume, interruption."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from mfmaccel.errors import UserInputError
from mfmaccel.models.record import CAUSAL_LM
from mfmaccel.pipeline import registry
from mfmaccel.pipeline.recipe import parse_recipe
from mfmaccel.pipeline.runner import run_recipe
from mfmaccel.pipeline.stage import Stage, StageParams, StageReport


class ScaleParams(StageParams):
    factor: float = 0.5


INTERRUPT_STAGE_DIRS: set[str] = set()  # a stage whose folder is named here is "Ctrl-C'd"


def scale_stage(model, params: ScaleParams, ctx):
    """A model-changing stage for tests: scales the LM head."""
    if ctx.stage_dir.name in INTERRUPT_STAGE_DIRS:
        raise KeyboardInterrupt
    with torch.no_grad():
        model.module.lm_head.weight.mul_(params.factor)
    (ctx.stage_dir / "note.txt").write_text("scaled")
    return model, StageReport(artifacts=["note.txt"], notes="scaled",
                              curves={"loss": [3.0, 2.0, 1.5]})


@pytest.fixture
def with_scale_stage(monkeypatch):
    stage = Stage(name="scale", run=scale_stage, params=ScaleParams, accepts=(CAUSAL_LM,))
    monkeypatch.setitem(registry.STAGES, "scale", stage)


def recipe(**stages_and_more):
    return parse_recipe({
        "name": "t", "model": "tiny-llama",
        "evaluation": {"tasks": ["ppl"], "ppl_tokens": 200, "speed_tokens": 4},
        "stages": [{"stage": "evaluate"}],
        **stages_and_more,
    })


def test_every_stage_is_measured_before_and_after(tmp_path, with_scale_stage) -> None:
    r = recipe(stages=[{"stage": "evaluate"}, {"stage": "scale", "params": {"factor": 0.0}}])
    state = run_recipe(r, runs_dir=tmp_path, log=lambda m: None)
    evaluate, scale = state.stages
    assert evaluate.before == state.baseline and evaluate.after.quality == pytest.approx(
        state.baseline.quality)
    assert scale.before == evaluate.after
    # a zeroed head predicts uniformly: perplexity becomes the vocabulary size
    assert scale.after.quality["ppl"] == pytest.approx(261, rel=1e-3)
    assert scale.after.decode_tokens_per_s
    assert scale.after.weight_bytes == state.baseline.weight_bytes
    run = tmp_path / "t"
    saved = json.loads((run / "metrics.json").read_text())
    assert [s["name"] for s in saved["stages"]] == ["evaluate", "scale"]
    assert (run / "stages" / "01-scale" / "model" / "model.safetensors").is_file()
    assert "stages/01-scale/note.txt" in scale.artifacts
    assert (run / "recipe.yaml").is_file() and "scale done" in (run / "log.txt").read_text()


def test_interrupted_run_resumes_from_the_last_completed_stage(tmp_path, with_scale_stage):
    stages = [{"stage": "scale", "params": {"factor": 0.0}},
              {"stage": "scale", "name": "second", "params": {"factor": 2.0}}]
    INTERRUPT_STAGE_DIRS.add("01-second")
    try:
        with pytest.raises(KeyboardInterrupt):
            run_recipe(recipe(stages=stages), runs_dir=tmp_path, log=lambda m: None)
    finally:
        INTERRUPT_STAGE_DIRS.clear()
    saved = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert [s["name"] for s in saved["stages"]] == ["scale"]
    logs: list[str] = []
    state = run_recipe(recipe(stages=stages), runs_dir=tmp_path, resume=True, log=logs.append)
    assert [s.name for s in state.stages] == ["scale", "second"]
    assert "stage scale: done in an earlier run, skipped" in logs
    # the resumed model is the first stage's (zeroed head), so scaling it keeps it uniform
    assert state.stages[1].after.quality["ppl"] == pytest.approx(261, rel=1e-3)
    with pytest.raises(UserInputError, match="different recipe"):
        changed = [stages[0], {**stages[1], "params": {"factor": 3.0}}]
        run_recipe(recipe(stages=changed), runs_dir=tmp_path, resume=True, log=lambda m: None)


def test_resume_skips_completed_stages_and_reloads_their_model(tmp_path, with_scale_stage):
    stages = [{"stage": "scale", "params": {"factor": 0.0}}, {"stage": "evaluate"}]
    first = run_recipe(recipe(stages=stages[:1] + [{"stage": "evaluate"}]), runs_dir=tmp_path,
                       log=lambda m: None)
    logs: list[str] = []
    again = run_recipe(recipe(stages=stages), runs_dir=tmp_path, resume=True, log=logs.append)
    assert any("skipped" in m for m in logs)
    assert again.stages[-1].after.quality == pytest.approx(first.stages[0].after.quality)


def test_existing_run_needs_resume_or_fresh(tmp_path) -> None:
    run_recipe(recipe(), runs_dir=tmp_path, log=lambda m: None)
    with pytest.raises(UserInputError, match="--resume.*--fresh"):
        run_recipe(recipe(), runs_dir=tmp_path, log=lambda m: None)
    state = run_recipe(recipe(), runs_dir=tmp_path, fresh=True, log=lambda m: None)
    assert len(state.stages) == 1


def test_incompatible_stage_or_task_fails_before_work(tmp_path, with_scale_stage) -> None:
    bad_stage = parse_recipe({"name": "v", "model": "tiny-llava",
                              "stages": [{"stage": "scale"}]})
    with pytest.raises(UserInputError, match="cannot take 'tiny-llava'"):
        run_recipe(bad_stage, runs_dir=tmp_path)
    bad_task = parse_recipe({"name": "v", "model": "tiny-llama",
                             "evaluation": {"tasks": ["medvqa"]}, "stages": []})
    with pytest.raises(UserInputError, match="needs a vlm model"):
        run_recipe(bad_task, runs_dir=tmp_path)
    assert not (tmp_path / "v").exists()


def test_a_stage_that_misses_its_bar_is_set_aside(tmp_path, with_scale_stage) -> None:
    """A zeroed head sends perplexity to the vocabulary size: far past a 5% rise, so the model
    from before the stage goes on, unsaved, and the next stage measures that model."""
    r = recipe(stages=[{"stage": "scale", "params": {"factor": 0.0}, "max_drop": {"ppl": 0.05}},
                       {"stage": "scale", "name": "gentle", "params": {"factor": 1.0},
                        "max_drop": {"ppl": 0.05}}])
    lines: list[str] = []
    state = run_recipe(r, runs_dir=tmp_path, log=lines.append)
    missed, gentle = state.stages
    assert not missed.kept and "ppl" in missed.missed_bar and "allowed" in missed.missed_bar
    assert missed.after.quality["ppl"] == pytest.approx(261, rel=1e-3)
    assert gentle.kept and gentle.before == state.baseline
    assert gentle.after.quality["ppl"] == pytest.approx(state.baseline.quality["ppl"])
    assert state.latest() == gentle.after
    assert any("missed its bar" in line for line in lines)
    run = tmp_path / "t"
    assert not (run / "stages" / "00-scale" / "model").exists()
    assert (run / "stages" / "01-gentle" / "model").is_dir()
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["stages"][0]["missed_bar"] == missed.missed_bar


def test_a_bar_on_a_task_the_recipe_does_not_measure_is_refused() -> None:
    with pytest.raises(UserInputError, match="evaluation.tasks"):
        recipe(stages=[{"stage": "evaluate", "max_drop": {"humaneval": 0.02}}])
    with pytest.raises(UserInputError, match=r"\[0, 1\]"):
        recipe(stages=[{"stage": "evaluate", "max_drop": {"ppl": 2}}])


def test_fuse_stage_fuses_the_quantized_model_and_a_resumed_run_fuses_it_again(
        tmp_path, monkeypatch) -> None:
    from mfmaccel.execute.fusion_blocks import FusedDecoderBlock
    from mfmaccel.pipeline import runner

    stages = [{"stage": "quantize", "params": {"uniform": "int8-c-sym", "method": "rtn"}},
              {"stage": "fuse"}, {"stage": "evaluate", "name": "after"}]
    evaluate = registry.STAGES["evaluate"]

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setitem(registry.STAGES, "evaluate", dataclasses.replace(evaluate,
                                                                         run=interrupted))
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe(stages=stages), runs_dir=tmp_path, log=lambda m: None)
    monkeypatch.setitem(registry.STAGES, "evaluate", evaluate)
    resumed_models = []
    resume = runner._resume_model
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "_resume_model",
                      lambda *a: resumed_models.append(resume(*a)) or resumed_models[-1])
        state = run_recipe(recipe(stages=stages), runs_dir=tmp_path, resume=True,
                           log=lambda m: None)
    quantize, fuse, after = state.stages
    assert "blocks fused" in fuse.notes and not (tmp_path / "t" / "stages" / "01-fuse" /
                                                 "model").exists()
    assert fuse.after.quality["ppl"] == pytest.approx(quantize.after.quality["ppl"], rel=1e-4)
    assert after.after.quality["ppl"] == pytest.approx(fuse.after.quality["ppl"], rel=1e-4)
    (model,) = resumed_models
    assert any(isinstance(m, FusedDecoderBlock) for m in model.module.modules())


def test_weights_may_not_change_after_fusion(tmp_path, with_scale_stage) -> None:
    bad = recipe(stages=[{"stage": "fuse"}, {"stage": "scale"}])
    with pytest.raises(UserInputError, match="move the fuse stage after it"):
        run_recipe(bad, runs_dir=tmp_path)

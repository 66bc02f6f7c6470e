"""A run killed at any point resumes with `resume=True` and ends with the same metrics as a run
that was never interrupted: before the baseline, during it, during a stage (its folder half
written), during the measurement after a stage, and between stages."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mfmaccel.pipeline import registry, runner
from mfmaccel.pipeline.recipe import parse_recipe
from mfmaccel.pipeline.runner import run_recipe

RECIPE = {
    "name": "r", "model": "tiny-llama", "seed": 3,
    "evaluation": {"tasks": ["ppl"], "ppl_tokens": 200, "ppl_context": 64, "speed": False},
    "stages": [
        {"stage": "prune", "params": {"blocks": 1, "calib_tokens": 64}},
        {"stage": "quantize", "params": {"uniform": "int8-c", "method": "rtn",
                                         "calib_tokens": 64}},
    ],
}


def figures(state) -> list:
    """What a run measured: quality, size and parameters at the baseline and after each stage."""
    points = [state.baseline] + [s.after for s in state.stages]
    return [(p.quality, p.weight_bytes, p.params) for p in points]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    runs = tmp_path_factory.mktemp("whole")
    return figures(run_recipe(parse_recipe(RECIPE), runs_dir=runs, log=lambda m: None))


def no_progress(label):
    return lambda done, total: None


def kill_in_progress_of(wanted: str):
    """A progress factory whose bar `wanted` interrupts the run at its first tick."""
    def factory(label):
        def tick(done, total):
            if label == wanted:
                raise KeyboardInterrupt
        return tick
    return factory


def kill_on_log(wanted: str):
    def log(message):
        if message.startswith(wanted):
            raise KeyboardInterrupt
    return log


@pytest.fixture
def half_written_quantize(monkeypatch):
    """The quantize stage leaves a half-written file in its folder, then is killed."""
    stage = registry.STAGES["quantize"]

    def killed(model, params, ctx):
        (ctx.stage_dir / "compression.json").write_text('{"half": ')
        raise KeyboardInterrupt

    monkeypatch.setitem(registry.STAGES, "quantize", dataclasses.replace(stage, run=killed))
    return lambda: monkeypatch.setitem(registry.STAGES, "quantize", stage)


def resume_and_compare(runs, uninterrupted):
    logs: list[str] = []
    state = run_recipe(parse_recipe(RECIPE), runs_dir=runs, resume=True, log=logs.append)
    assert figures(state) == uninterrupted
    saved = json.loads((runs / "r" / "metrics.json").read_text())
    assert [s["name"] for s in saved["stages"]] == ["prune", "quantize"]
    return logs


def test_killed_before_the_baseline(tmp_path, monkeypatch, uninterrupted):
    def killed(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(runner, "_resume_model", killed)
        with pytest.raises(KeyboardInterrupt):
            run_recipe(parse_recipe(RECIPE), runs_dir=tmp_path, log=lambda m: None)
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["baseline"] is None and saved["stages"] == []
    resume_and_compare(tmp_path, uninterrupted)


@pytest.mark.parametrize("bar", ["baseline", "prune: evaluate", "quantize: evaluate"])
def test_killed_during_a_measurement(tmp_path, uninterrupted, bar):
    with pytest.raises(KeyboardInterrupt):
        run_recipe(parse_recipe(RECIPE), runs_dir=tmp_path, progress=kill_in_progress_of(bar),
                   log=lambda m: None)
    resume_and_compare(tmp_path, uninterrupted)


def test_killed_between_stages(tmp_path, uninterrupted):
    with pytest.raises(KeyboardInterrupt):
        run_recipe(parse_recipe(RECIPE), runs_dir=tmp_path, progress=no_progress,
                   log=kill_on_log("stage prune done"))
    logs = resume_and_compare(tmp_path, uninterrupted)
    assert "stage prune: done in an earlier run, skipped" in logs


def test_killed_during_a_stage_whose_folder_is_half_written(tmp_path, uninterrupted,
                                                            half_written_quantize):
    with pytest.raises(KeyboardInterrupt):
        run_recipe(parse_recipe(RECIPE), runs_dir=tmp_path, log=lambda m: None)
    stage_dir = tmp_path / "r" / "stages" / "01-quantize"
    assert (stage_dir / "compression.json").read_text() == '{"half": '
    half_written_quantize()  # the next attempt runs the real stage
    resume_and_compare(tmp_path, uninterrupted)
    assert not (stage_dir / "compression.json").exists()  # the killed attempt's file is gone
    assert (stage_dir / "model").is_dir()


def test_killed_twice_then_resumed(tmp_path, uninterrupted):
    for bar in ("baseline", "prune: evaluate"):
        with pytest.raises(KeyboardInterrupt):
            run_recipe(parse_recipe(RECIPE), runs_dir=tmp_path, resume=True,
                       progress=kill_in_progress_of(bar), log=lambda m: None)
    resume_and_compare(tmp_path, uninterrupted)


def test_a_run_folder_of_an_earlier_version_resumes(tmp_path, uninterrupted):
    """Before the marker, a run killed during its baseline left recipe.yaml and no metrics.json
    ("add --resume" while --resume was given); it resumes now, and gets the marker."""
    with pytest.raises(KeyboardInterrupt):
        run_recipe(parse_recipe(RECIPE), runs_dir=tmp_path,
                   progress=kill_in_progress_of("baseline"), log=lambda m: None)
    (tmp_path / "r" / ".mfmaccel-output").unlink()
    (tmp_path / "r" / "metrics.json").unlink()
    resume_and_compare(tmp_path, uninterrupted)
    assert (tmp_path / "r" / ".mfmaccel-output").is_file()

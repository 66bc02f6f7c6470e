"""Co-optimising the execution knobs (`execute.settings`, `execute.cooptimize`,
`pipeline.cooptimize`, the `cooptimize` stage, `mfmaccel cooptimize` and `eval --knobs`) on
tiny-llava: the knobs apply in order, the search keeps to its accuracy constraint, its front is
Pareto-optimal, the chosen point is applied where it is asked for, and bad input is refused."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mfmaccel.cli import app
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.run import vqa_samples
from mfmaccel.execute.cooptimize import (
    SearchSpace,
    Trial,
    cooptimize,
    default_space,
    pareto_front,
    summarise,
)
from mfmaccel.execute.settings import Knobs, apply_knobs, load_knobs
from mfmaccel.models import load_model
from mfmaccel.pipeline.recipe import parse_recipe
from mfmaccel.pipeline.runner import run_recipe

runner = CliRunner()


@pytest.fixture(scope="module")
def llava():
    return load_model("tiny-llava")


@pytest.fixture(scope="module")
def questions():
    return vqa_samples(None, "val", limit=6, benchmark="medvqa2")


def image_tokens(model, sample) -> int:
    from mfmaccel.evaluate.vqa import prompt_inputs

    ids = prompt_inputs(model, sample)["input_ids"]
    return int((ids == model.module.config.image_token_id).sum())


def test_knobs_apply_in_order_and_default_knobs_change_nothing(llava, questions) -> None:
    assert apply_knobs(llava, Knobs()) is llava
    base = image_tokens(llava, questions[0])
    smaller = apply_knobs(llava, Knobs(image_size=24))
    merged = apply_knobs(llava, Knobs(image_size=24, merge_r=2))
    assert image_tokens(smaller, questions[0]) < base
    assert image_tokens(merged, questions[0]) < image_tokens(smaller, questions[0])
    dropped = apply_knobs(llava, Knobs(drop_layer=0, drop_keep=0.5))
    assert dropped.meta["image_token_dropping"] == {"layer": 0, "keep": 0.5}
    with pytest.raises(UserInputError, match="drop_keep needs drop_layer"):
        apply_knobs(llava, Knobs(drop_keep=0.5))


def test_load_knobs_reads_a_record_or_bare_knobs_and_refuses_the_rest(tmp_path) -> None:
    record = tmp_path / "c.json"
    record.write_text(json.dumps({"chosen": {"image_size": 24, "merge_r": 1}, "trials": []}))
    assert load_knobs(record) == Knobs(image_size=24, merge_r=1)
    bare = tmp_path / "k.json"
    bare.write_text(json.dumps({"patch": 16}))
    assert load_knobs(bare) == Knobs(patch=16)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"resolution": 24}))
    with pytest.raises(UserInputError, match="unknown knob 'resolution'; valid: image_size"):
        load_knobs(bad)
    bad.write_text("{not json")
    with pytest.raises(UserInputError, match="not valid JSON"):
        load_knobs(bad)
    with pytest.raises(UserInputError, match="does not exist"):
        load_knobs(tmp_path / "missing.json")


def trial(accuracy: float, prefill: float, gflops: float, feasible: bool = True) -> Trial:
    return Trial(knobs={}, accuracy=accuracy, prefill_ms=prefill, gflops=gflops,
                 image_tokens=1, feasible=feasible)


def test_pareto_front_keeps_only_undominated_feasible_trials() -> None:
    trials = [trial(0.5, 10, 5), trial(0.5, 5, 3), trial(0.4, 4, 2), trial(0.5, 6, 4),
              trial(0.9, 1, 1, feasible=False)]
    assert pareto_front(trials, ["accuracy", "prefill_ms", "gflops"]) == [1, 2]


def test_the_chosen_point_is_feasible_and_the_unchanged_model_may_win(llava, questions) -> None:
    done = [trial(0.5, 5, 3), trial(0.5, 9, 2), trial(0.2, 1, 1, feasible=False)]
    result = summarise(llava, questions, done, ["accuracy", "prefill_ms", "gflops"],
                       max_drop=0.01, prefer="cpu", seconds=0)
    assert result.chosen_trial == 0  # the only feasible change is slower
    with pytest.raises(UserInputError, match="raise --max-drop"):
        summarise(llava, questions, done[::2], ["accuracy", "prefill_ms", "gflops"],
                  max_drop=0.01, prefer="cpu", seconds=0)


def test_search_records_every_trial_under_its_constraint(llava, questions) -> None:
    space = SearchSpace(grids=((32, 8), (24, 8), (16, 8)), max_merge=2, drop_layers=(0,),
                        keeps=(1.0, 0.5))
    result = cooptimize(llava, questions, trials=5, max_drop=0.2, space=space, timing=1,
                        repeats=1, price=lambda m: {"latency_ms": 1.0, "energy_mj": 2.0})
    assert result.trials[0].knobs == Knobs().to_dict() and len(result.trials) >= 2
    for done in result.trials:
        assert done.feasible == (result.baseline.accuracy - done.accuracy <= 0.2 + 1e-9)
        assert done.accelerator == {"latency_ms": 1.0, "energy_mj": 2.0} and done.gflops > 0
    assert result.trials[result.chosen_trial].feasible and result.front
    assert result.objectives == ["accuracy", "prefill_ms", "gflops", "latency_ms",
                                 "energy_mj"]


def test_default_space_keeps_to_grids_the_patch_divides(llava) -> None:
    space = default_space(llava)
    assert all(size % patch == 0 for size, patch in space.grids)
    assert (32, 8) in space.grids  # tiny-llava's own grid


@pytest.mark.parametrize(("settings", "message"), [
    ({"trials": 0}, "--trials must be at least 1"),
    ({"max_drop": 1.5}, "--max-drop is a share"),
    ({"prefer": "accelerator"}, "needs an accelerator to price"),
])
def test_bad_requests_are_refused(llava, questions, settings, message) -> None:
    with pytest.raises(UserInputError, match=message):
        cooptimize(llava, questions, **settings)


def test_cooptimize_refuses_a_language_model_alone(questions) -> None:
    with pytest.raises(UserInputError, match="vision-language model"):
        cooptimize(load_model("tiny-llama"), questions)


def test_cli_writes_the_record_and_front_and_eval_applies_the_knobs(tmp_path) -> None:
    out = tmp_path / "c.json"
    result = runner.invoke(app, ["cooptimize", "--model", "tiny-llava", "--trials", "3",
                                 "--limit", "6", "--max-drop", "0.99", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["task"] == "medvqa2" and record["search_split"] == "val"
    assert record["held_out"]["questions"] == 6 and out.with_suffix(".png").is_file()
    evaluated = tmp_path / "e.json"
    result = runner.invoke(app, ["eval", "--model", "tiny-llava", "--task", "medvqa2",
                                 "--limit", "4", "--knobs", str(out), "--out", str(evaluated)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "tiny-llama"], "vision-language model"),
    (["--model", "tiny-llava", "--arch", "tpu"], "unknown architecture preset 'tpu'"),
    (["--model", "tiny-llava", "--task", "vqa3"], "unknown VQA benchmark 'vqa3'"),
])
def test_cli_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, args, message) -> None:
    out = tmp_path / "c.json"
    result = runner.invoke(app, ["cooptimize", *args, "--trials", "2", "--limit", "4",
                                 "--out", str(out)])
    assert result.exit_code == 2 and message in result.output
    assert not out.exists()


def test_stage_applies_the_chosen_knobs_and_a_resume_reapplies_them(tmp_path,
                                                                   questions) -> None:
    from mfmaccel.pipeline.rundir import RunDirectory
    from mfmaccel.pipeline.runner import _resume_model

    recipe = parse_recipe({"name": "co", "model": "tiny-llava",
                           "evaluation": {"tasks": ["medvqa2"], "limit": 4},
                           "stages": [{"stage": "cooptimize",
                                       "params": {"trials": 3, "limit": 6, "max_drop": 0.99}},
                                      {"stage": "hardware", "params": {"seq_len": 8}}]})
    state = run_recipe(recipe, runs_dir=tmp_path, log=lambda m: None)
    record = json.loads((tmp_path / "co" / state.stages[0].artifacts[0]).read_text())
    assert "chosen" in state.stages[0].notes and record["held_out"]["questions"] == 6
    chosen = apply_knobs(load_model("tiny-llava"), Knobs(**record["chosen"]))
    resumed = _resume_model(recipe, RunDirectory(tmp_path / "co"), state)
    assert image_tokens(resumed, questions[0]) == image_tokens(chosen, questions[0])
    assert resumed.meta.get("image_token_dropping") == chosen.meta.get("image_token_dropping")


def test_a_weight_changing_stage_after_cooptimize_is_refused(tmp_path) -> None:
    recipe = parse_recipe({"name": "bad", "model": "tiny-llava",
                           "evaluation": {"tasks": ["medvqa2"], "limit": 4},
                           "stages": [{"stage": "cooptimize"},
                                      {"stage": "prune", "params": {"blocks": 1}}]})
    with pytest.raises(UserInputError, match="move the cooptimize stage after it"):
        run_recipe(recipe, runs_dir=tmp_path, log=lambda m: None)


def test_the_search_starts_from_each_knob_alone() -> None:
    from mfmaccel.execute.cooptimize import seed_points

    space = SearchSpace(grids=((32, 8), (24, 8), (16, 8), (32, 16)), max_merge=2,
                        drop_layers=(0, 1), keeps=(1.0, 0.5, 0.25))
    points = seed_points(space, (32, 8))
    alone = [{k: v for k, v in p.items() if v != {"grid": 0, "merge_r": 0, "keep": 1.0}.get(k)
              and k != "drop_layer"} for p in points]
    assert alone == [{"merge_r": 1}, {"merge_r": 2}, {"keep": 0.5}, {"keep": 0.25},
                     {"grid": 1}, {"grid": 2}, {"grid": 3}]
    assert all(p["drop_layer"] == 1 for p in points)


def test_prefer_flops_chooses_the_cheapest_feasible_point(llava, questions) -> None:
    done = [trial(0.5, 5, 3), trial(0.5, 9, 2), trial(0.5, 4, 2.5)]
    objectives = ["accuracy", "prefill_ms", "gflops"]
    by = {prefer: summarise(llava, questions, done, objectives, max_drop=0.01, prefer=prefer,
                            seconds=0).chosen_trial for prefer in ("cpu", "flops")}
    assert by == {"cpu": 2, "flops": 1}

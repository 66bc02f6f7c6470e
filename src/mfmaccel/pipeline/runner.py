"""Run a recipe: check everything, measure the baseline, then each stage with before/after.

The state is saved when the run folder is created, after the baseline and after each stage;
a run killed anywhere resumes (`resume=True`) from the last of those, redoing only the part
that was cut short.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.run import TaskData, check_kind_fits, load_task_data
from mfmaccel.execute.settings import apply_knobs, load_knobs
from mfmaccel.models import LoadedModel, load_model
from mfmaccel.models.loader import model_kind, save_model
from mfmaccel.pipeline.measure import measure
from mfmaccel.pipeline.recipe import Recipe
from mfmaccel.pipeline.registry import get_stage, stage_params
from mfmaccel.pipeline.rundir import RunDirectory, RunState
from mfmaccel.pipeline.stage import RunContext
from mfmaccel.pipeline.stages import cooptimize
from mfmaccel.records import StageResult

Progress = Callable[[str], Callable[[int, int], None]]


def check_recipe(recipe: Recipe) -> list[TaskData]:
    """Everything that can be checked before work starts; returns the loaded task data."""
    kind = model_kind(recipe.model)
    for task in recipe.evaluation.tasks:
        check_kind_fits(kind, recipe.model, task)
    knobs_set = None
    for spec in recipe.stages:
        stage = get_stage(spec.stage)
        if kind not in stage.accepts:
            raise UserInputError(
                f"stage '{spec.label}' cannot take '{recipe.model}' (a {kind} model); it "
                f"accepts {', '.join(stage.accepts)}"
            )
        if knobs_set and stage.changes_model:
            raise UserInputError(f"stage '{spec.label}' changes weights after '{knobs_set}' "
                                 "chose execution knobs for the model before it; move the "
                                 "cooptimize stage after it")
        knobs_set = spec.label if spec.stage == "cooptimize" else knobs_set
    limit, seed = recipe.evaluation.limit, recipe.seed
    return [load_task_data(task, None, limit, seed) for task in recipe.evaluation.tasks]


def _resume_model(recipe: Recipe, run: RunDirectory, state: RunState) -> LoadedModel:
    """The model as the last completed stage left it: the last saved weights, with the
    execution knobs a completed `cooptimize` stage chose re-applied."""
    knobs = None
    for index in range(len(state.stages) - 1, -1, -1):
        stage_dir = run.stage_dir(index, state.stages[index].name)
        if knobs is None and (stage_dir / cooptimize.RECORD).is_file():
            knobs = load_knobs(stage_dir / cooptimize.RECORD)
        if (stage_dir / "model").is_dir():
            model = load_model(str(stage_dir / "model"))
            model.name = recipe.model
            break
    else:
        model = load_model(recipe.model, seed=recipe.seed)
    return apply_knobs(model, knobs) if knobs else model


def run_recipe(
    recipe: Recipe,
    *,
    runs_dir: Path = Path("runs"),
    resume: bool = False,
    fresh: bool = False,
    progress: Progress | None = None,
    log: Callable[[str], None] = print,
) -> RunState:
    """Run every stage not yet completed; metrics.json holds the result."""
    tasks = check_recipe(recipe)
    run = RunDirectory(runs_dir / recipe.name)
    state = run.start(recipe, resume=resume, fresh=fresh)

    def note(message: str) -> None:
        run.log(message)
        log(message)

    def bar(label: str) -> Callable[[int, int], None] | None:
        return progress(label) if progress else None

    model = _resume_model(recipe, run, state)
    if state.baseline is None:
        note(f"measuring {recipe.model} before any stage")
        state.baseline = measure(model, tasks, recipe.evaluation, bar("baseline"))
        run.save(state)
    for index, spec in enumerate(recipe.stages):
        if spec.label in state.completed():
            note(f"stage {spec.label}: done in an earlier run, skipped")
            continue
        stage = get_stage(spec.stage)
        stage_dir = run.clear_stage_dir(index, spec.label)  # a killed attempt's files go
        note(f"stage {spec.label} ({spec.stage}) starts")
        start = time.perf_counter()
        ctx = RunContext(stage_dir=stage_dir, seed=recipe.seed, log=note,
                         progress=bar(spec.label) or (lambda done, total: None))
        model, report = stage.run(model, stage_params(spec.stage, spec.params), ctx)
        seconds = time.perf_counter() - start
        artifacts = [str((stage_dir / a).relative_to(run.root)) for a in report.artifacts]
        if stage.changes_model:
            save_model(model, stage_dir / "model")
            artifacts.append(str((stage_dir / "model").relative_to(run.root)))
        after = (measure(model, tasks, recipe.evaluation, bar(f"{spec.label}: evaluate"))
                 if stage.measure_after else state.latest())
        state.stages.append(StageResult(
            name=spec.label, stage=spec.stage, params=spec.params, before=state.latest(),
            after=after, seconds=seconds, artifacts=artifacts, notes=report.notes,
            curves=report.curves,
        ))
        run.save(state)
        note(f"stage {spec.label} done in {seconds:.1f} s")
    return state

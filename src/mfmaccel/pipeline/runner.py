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
from mfmaccel.models import LoadedModel, load_model
from mfmaccel.models.loader import model_kind, save_model
from mfmaccel.pipeline.measure import measure, measure_speed_again, missed_bar
from mfmaccel.pipeline.recipe import Recipe
from mfmaccel.pipeline.registry import get_stage, stage_params
from mfmaccel.pipeline.rundir import RunDirectory, RunState
from mfmaccel.pipeline.stage import SPEED_ONLY, RunContext
from mfmaccel.records import StageResult

Progress = Callable[[str], Callable[[int, int], None]]


def check_recipe(recipe: Recipe) -> list[TaskData]:
    """Everything that can be checked before work starts; returns the loaded task data."""
    kind = model_kind(recipe.model)
    for task in recipe.evaluation.tasks:
        check_kind_fits(kind, recipe.model, task)
    set_by = None  # the last stage that changed the model without new weights
    for spec in recipe.stages:
        stage = get_stage(spec.stage)
        if kind not in stage.accepts:
            raise UserInputError(
                f"stage '{spec.label}' cannot take '{recipe.model}' (a {kind} model); it "
                f"accepts {', '.join(stage.accepts)}"
            )
        if set_by and stage.changes_model:  # a resume could not redo it on the new weights
            raise UserInputError(f"stage '{spec.label}' changes weights after '{set_by.label}' "
                                 "set how the model before it executes; move the "
                                 f"{set_by.stage} stage after it")
        if stage.reapply is not None:
            set_by = spec
    limit, seed = recipe.evaluation.limit, recipe.seed
    return [load_task_data(task, None, limit, seed) for task in recipe.evaluation.tasks]


def _resume_model(recipe: Recipe, run: RunDirectory, state: RunState) -> LoadedModel:
    """The model as the last completed stage left it: the last saved weights, then what each
    kept stage after them did without saving weights (`Stage.reapply`), in run order."""
    kept = [(run.stage_dir(index, result.name), get_stage(result.stage))
            for index, result in enumerate(state.stages) if result.kept]
    last_saved = max((place for place, (stage_dir, _) in enumerate(kept)
                      if (stage_dir / "model").is_dir()), default=-1)
    if last_saved < 0:
        model = load_model(recipe.model, seed=recipe.seed)
    else:
        model = load_model(str(kept[last_saved][0] / "model"))
        model.name = recipe.model
    for stage_dir, stage in kept[last_saved + 1:]:
        if stage.reapply is not None:
            model = stage.reapply(model, stage_dir)
    return model


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
        if stage.measure_after == SPEED_ONLY:
            after = measure_speed_again(model, recipe.evaluation, state.latest())
        elif stage.measure_after:
            after = measure(model, tasks, recipe.evaluation, bar(f"{spec.label}: evaluate"))
        else:
            after = state.latest()
        missed = missed_bar(spec.max_drop, state.baseline, after)
        if missed:
            note(f"stage {spec.label} missed its bar: {missed}; the model from before it "
                 "goes on")
            model = _resume_model(recipe, run, state)
        elif stage.changes_model:
            save_model(model, stage_dir / "model")
            artifacts.append(str((stage_dir / "model").relative_to(run.root)))
        state.stages.append(StageResult(
            name=spec.label, stage=spec.stage, params=spec.params, before=state.latest(),
            after=after, seconds=seconds, artifacts=artifacts, notes=report.notes,
            curves=report.curves, missed_bar=missed,
        ))
        run.save(state)
        note(f"stage {spec.label} done in {seconds:.1f} s")
    return state

"""`cooptimize`: the execution knobs (resolution, patch stride, token merging, image-token
dropping) searched on the run's vision-language model (layer 3 of the method,
`pipeline.cooptimize`), and the chosen setting applied: the stages after it (and the runner's
measurement) see the faster model. Its weights do not change, so nothing new is saved; the
chosen knobs are in `cooptimize.json`, from which a resumed run re-applies them. Put it after
every stage that changes weights (the recipe check refuses one after it)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from mfmaccel.execute.settings import Knobs, apply_knobs, load_knobs
from mfmaccel.fileio import atomic_write_json
from mfmaccel.models.record import VLM, LoadedModel
from mfmaccel.pipeline.cooptimize import cooptimize_loaded
from mfmaccel.pipeline.stage import RunContext, Stage, StageParams, StageReport

RECORD = "cooptimize.json"


class CooptimizeParams(StageParams):
    task: str = Field("medvqa2", pattern="^(medvqa2|medvqa)$",
                      description="closed-question benchmark: val searched, test held out")
    trials: int = Field(24, ge=1, description="knob settings tried (the unchanged one first)")
    limit: int | None = Field(100, ge=1, description="questions of each split")
    max_drop: float = Field(0.01, ge=0, lt=1, description="accuracy drop allowed (share)")
    arch: str | None = Field("edge", description="accelerator preset pricing each setting")
    prefer: str = Field("cpu", pattern="^(cpu|accelerator|flops)$")


def run(model: LoadedModel, params: CooptimizeParams, ctx: RunContext):
    result, held = cooptimize_loaded(model, task=params.task, trials=params.trials,
                                     limit=params.limit, max_drop=params.max_drop,
                                     arch=params.arch, prefer=params.prefer, seed=ctx.seed,
                                     test_limit=params.limit, progress=ctx.progress)
    knobs = Knobs(**result.chosen)
    atomic_write_json(ctx.stage_dir / RECORD, {**result.to_dict(), "held_out": held.to_dict()})
    chosen, base = result.trials[result.chosen_trial], result.baseline
    notes = (f"chosen {knobs.describe()}: val accuracy {chosen.accuracy:.3f} (unchanged "
             f"{base.accuracy:.3f}), test {held.variant_accuracy:.3f} (unchanged "
             f"{held.baseline_accuracy:.3f}; paired 95% interval of the drop "
             f"{held.drop_low:+.3f} to {held.drop_high:+.3f}), CPU prefill "
             f"{chosen.prefill_ms:.0f} ms (unchanged "
             f"{base.prefill_ms:.0f}), {chosen.gflops:.1f} GFLOPs (unchanged {base.gflops:.1f})")
    return apply_knobs(model, knobs), StageReport(artifacts=[RECORD], notes=notes)


def reapply(model: LoadedModel, stage_dir: Path) -> LoadedModel:
    """The chosen knobs, applied again on resume."""
    return apply_knobs(model, load_knobs(stage_dir / RECORD))


STAGE = Stage(
    name="cooptimize", run=run, params=CooptimizeParams, accepts=(VLM,),
    changes_model=False, measure_after=True, reapply=reapply,
    summary="resolution, stride, token merging and dropping searched; the best applied",
)

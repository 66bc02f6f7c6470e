"""`finetune`: the three-phase domain adaptation (layer 1 of the method) on the pipeline's model.

Runs the tower warm-up, alignment, instruction tuning and downstream VQA phases of
`mfmaccel.finetune` on whatever LLaVA-style VLM the recipe carries, and hands back the model
with its LoRA adapter merged. Artifacts: `finetune.json` (loss curves, val accuracy per phase,
wall times) and, for medvlm, `trained_parts/` (the small files `load_medvlm` reads).

On the untrained `medvlm-base`, when the committed `weights/medvlm/` were trained with exactly
these settings and seed, the stage applies them instead of training again (like a build cache:
same inputs, same result) and reports their recorded curves; `reuse: false` retrains.
"""

from __future__ import annotations

from mfmaccel.finetune.committed import matching_committed_parts
from mfmaccel.finetune.config import FinetuneConfig, PhaseSettings
from mfmaccel.finetune.run import finetune_model
from mfmaccel.models.medvlm_parts import apply_trained_parts, save_trained_parts
from mfmaccel.models.record import VLM, LoadedModel
from mfmaccel.pipeline.stage import RunContext, Stage, StageParams, StageReport


class FinetuneParams(PhaseSettings, StageParams):
    """The phases' settings; the seed is the recipe's, the model is the pipeline's."""

    reuse: bool = True  # apply committed weights trained with these exact settings


def run(model: LoadedModel, params: FinetuneParams, ctx: RunContext):
    config = FinetuneConfig(**params.model_dump(exclude={"reuse"}), seed=ctx.seed)
    committed = matching_committed_parts(model, config) if params.reuse else None
    if committed is not None:
        return _reuse(model, committed, ctx)
    model, record = finetune_model(model, config, log=ctx.log, progress=lambda _: ctx.progress)
    record.save(ctx.stage_dir / "finetune.json")
    artifacts = ["finetune.json"]
    if "vision" in model.meta:  # medvlm: keep the small trained parts too
        save_trained_parts(model, ctx.stage_dir / "trained_parts",
                           {"model": model.name, "seed": ctx.seed, "config": config.model_dump()})
        artifacts.append("trained_parts")
    model.meta.pop("trained_parts", None)
    last = record.phases[-1].val if record.phases else {}
    notes = (f"val accuracy after the last phase {last['accuracy']:.3f} on {last['n']} questions"
             if last else "no phase ran")
    return model, StageReport(artifacts=artifacts, notes=notes, curves=record.curves())


def _reuse(model: LoadedModel, committed, ctx: RunContext):
    folder, manifest = committed
    apply_trained_parts(model, folder, manifest)
    model.name = model.name.removesuffix("-base")
    trained = manifest.get("wall_seconds", {}).get("total", 0.0)
    ctx.log(f"finetune: applied {folder} (same settings and seed; reuse: false retrains)")
    notes = (f"applied the committed {folder.name} weights, trained with these settings and seed "
             f"by `{manifest.get('command', 'mfmaccel finetune')}` in {trained:.0f} s; "
             "set reuse: false to train again")
    return model, StageReport(notes=notes, curves=manifest.get("curves", {}))


STAGE = Stage(
    name="finetune", run=run, params=FinetuneParams, accepts=(VLM,),
    summary="three-phase domain adaptation: alignment, LoRA instruction tuning, downstream VQA",
)

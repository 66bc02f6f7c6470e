"""`fuse`: operator fusion on the CPU (the execute layer's `execute.fusion`): q/k/v and gate/up
in one product each, normalisation weights folded in; encoders and a LLaVA's tower too. The
weights are only restacked, so nothing new is saved; `fusion.json` says what was fused, and a
resumed run fuses the saved model again. Put it after every stage that changes weights (the
recipe check refuses one after it)."""

from __future__ import annotations

import json
from pathlib import Path

from mfmaccel.execute.fusion import fuse
from mfmaccel.fileio import atomic_write_json
from mfmaccel.models.record import CAUSAL_LM, ENCODER, VLM, LoadedModel
from mfmaccel.pipeline.stage import RunContext, Stage, StageParams, StageReport

RECORD = "fusion.json"


class FuseParams(StageParams):
    prepack: bool = True  # float products also get oneDNN's packed weight layout


def run(model: LoadedModel, params: FuseParams, ctx: RunContext):
    fused = fuse(model, prepack=params.prepack)
    report = fused.meta["fusion"]
    atomic_write_json(ctx.stage_dir / RECORD, {"prepack": params.prepack, **report})
    blocks = report["blocks"] + report["encoder_blocks"] + report["tower_blocks"]
    notes = (f"{blocks} blocks fused: q/k/v in {report['qkv_fused']}, gate/up in "
             f"{report['gate_up_fused']}, {report['norms_folded']} norms folded, "
             f"{report['packed_fused']} products of packed integers")
    if report["left_apart"]:
        notes += f"; left apart: {'; '.join(report['left_apart'][:3])}"
    return fused, StageReport(artifacts=[RECORD], notes=notes)


def reapply(model: LoadedModel, stage_dir: Path) -> LoadedModel:
    """The saved model fused again on resume, as the stage fused it."""
    return fuse(model, prepack=json.loads((stage_dir / RECORD).read_text())["prepack"])


STAGE = Stage(
    name="fuse", run=run, params=FuseParams, accepts=(CAUSAL_LM, VLM, ENCODER),
    changes_model=False, measure_after=True, reapply=reapply,
    summary="q/k/v and gate/up fused, normalisations folded (weights restacked, not changed)",
)

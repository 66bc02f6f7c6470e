"""`evaluate`: measure without changing the model (the runner's before/after is the point)."""

from __future__ import annotations

from mfmaccel.models.record import CAUSAL_LM, ENCODER, VISION, VLM, LoadedModel
from mfmaccel.pipeline.stage import RunContext, Stage, StageParams, StageReport


class EvaluateParams(StageParams):
    note: str = ""


def run(model: LoadedModel, params: EvaluateParams, ctx: RunContext):
    return model, StageReport(notes=params.note)


STAGE = Stage(
    name="evaluate", run=run, params=EvaluateParams,
    accepts=(CAUSAL_LM, VLM, ENCODER, VISION), changes_model=False,
    summary="measure the model as it is",
)

"""Every stage a recipe may name. Adding a stage: one module under `stages/`, one line here."""

from __future__ import annotations

from pydantic import ValidationError

from mfmaccel.errors import UserInputError
from mfmaccel.pipeline.stage import Stage, StageParams
from mfmaccel.pipeline.stages import (
    cooptimize,
    decode,
    design,
    evaluate,
    finetune,
    fuse,
    hardware,
    prune,
    quantize,
    spiking,
)

STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        evaluate.STAGE,
        finetune.STAGE,
        quantize.STAGE,
        prune.STAGE,
        decode.STAGE,
        fuse.STAGE,
        cooptimize.STAGE,
        hardware.STAGE,
        spiking.STAGE,
        design.STAGE,
    )
}


def get_stage(name: str, where: str = "recipe") -> Stage:
    if name not in STAGES:
        raise UserInputError(
            f"{where}: unknown stage '{name}'; available: {', '.join(sorted(STAGES))}"
        )
    return STAGES[name]


def stage_params(name: str, params: dict, where: str = "recipe") -> StageParams:
    """Stage `name`'s `params` (from the recipe), validated against its schema."""
    stage = get_stage(name, where)
    try:
        return stage.params.model_validate(params)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            valid = ", ".join(stage.params.model_fields) or "none"
            raise UserInputError(
                f"{where}.params: unknown key '{key}' for stage '{name}'; valid: {valid}"
            ) from None
        raise UserInputError(f"{where}.params.{key}: {first['msg']}") from None

"""What a stage is: one function that takes a model and returns a (better) model plus a report.

The runner evaluates before and after, saves the model, and records timing; a stage only does
its own job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from mfmaccel.models.record import LoadedModel

SPEED_ONLY = "speed"  # Stage.measure_after: the stage changes how fast, never what comes out


class StageParams(BaseModel):
    """Base of every stage's parameter schema: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class RunContext:
    """What a stage may use besides its model: its own folder, the seed, progress and log."""

    stage_dir: Path
    seed: int
    progress: Callable[[int, int], None] = lambda done, total: None
    log: Callable[[str], None] = print


@dataclass
class StageReport:
    """What the stage itself has to say; paths are relative to `RunContext.stage_dir`."""

    artifacts: list[str] = field(default_factory=list)
    notes: str = ""
    curves: dict[str, list[float]] = field(default_factory=dict)


StageFunction = Callable[[LoadedModel, StageParams, RunContext], tuple[LoadedModel, StageReport]]
# How a resumed run redoes what a completed stage did to the model without saving weights
# (fusion, execution knobs, a chosen draft), from the files it left in its folder.
Reapply = Callable[[LoadedModel, Path], LoadedModel]


@dataclass(frozen=True)
class Stage:
    name: str
    run: StageFunction
    params: type[StageParams]
    accepts: tuple[str, ...]  # model kinds the stage can take
    changes_model: bool = True  # False: the runner need not save a new model
    # True: measured again after the stage; False: the model's metrics carry over (its own
    # figures differ); SPEED_ONLY: quality carries over, speed is measured again.
    measure_after: bool | str = True
    summary: str = ""
    reapply: Reapply | None = None  # for a stage that changes the model without new weights

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


@dataclass(frozen=True)
class Stage:
    name: str
    run: StageFunction
    params: type[StageParams]
    accepts: tuple[str, ...]  # model kinds the stage can take
    changes_model: bool = True  # False: the runner need not save a new model
    measure_after: bool = True  # False: the model's metrics carry over (its own figures differ)
    summary: str = ""

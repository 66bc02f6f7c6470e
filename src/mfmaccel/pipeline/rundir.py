"""`runs/<name>/`: the recipe, metrics.json (the run's whole state), a log, one folder per stage.

metrics.json is rewritten atomically after every completed stage, so an interrupted run
resumes from the last stage that finished.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mfmaccel.errors import UserInputError
from mfmaccel.fileio import atomic_write_json, atomic_write_text
from mfmaccel.pipeline.recipe import Recipe
from mfmaccel.records import Metrics, StageResult


@dataclass
class RunState:
    recipe: dict[str, Any]
    baseline: Metrics | None = None
    stages: list[StageResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "stages": [s.to_dict() for s in self.stages],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        def metrics(d: dict | None) -> Metrics | None:
            return Metrics(**d) if d else None

        stages = [
            StageResult(**{**s, "before": Metrics(**s["before"]), "after": Metrics(**s["after"])})
            for s in data["stages"]
        ]
        return cls(recipe=data["recipe"], baseline=metrics(data["baseline"]), stages=stages)

    def completed(self) -> set[str]:
        return {s.name for s in self.stages}

    def latest(self) -> Metrics | None:
        return self.stages[-1].after if self.stages else self.baseline


class RunDirectory:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.metrics_path = root / "metrics.json"

    def stage_dir(self, index: int, label: str) -> Path:
        return self.root / "stages" / f"{index:02d}-{label}"

    def start(self, recipe: Recipe, resume: bool, fresh: bool) -> RunState:
        """A new state, or the saved one when resuming the same recipe."""
        recipe_dict = recipe.model_dump(mode="json")
        if self.metrics_path.is_file() and resume:
            state = RunState.from_dict(json.loads(self.metrics_path.read_text()))
            if state.recipe != recipe_dict:
                raise UserInputError(
                    f"{self.root} was started with a different recipe; rerun with --fresh "
                    "or give the recipe a new name"
                )
            return state
        if self.root.exists() and any(self.root.iterdir()) and not fresh:
            raise UserInputError(
                f"{self.root} already holds a run; add --resume to continue it or --fresh "
                "to start over"
            )
        if fresh and self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / "recipe.yaml", yaml.safe_dump(recipe_dict, sort_keys=False))
        return RunState(recipe=recipe_dict)

    def save(self, state: RunState) -> None:
        atomic_write_json(self.metrics_path, state.to_dict())

    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with (self.root / "log.txt").open("a") as handle:
            handle.write(f"{stamp} {message}\n")

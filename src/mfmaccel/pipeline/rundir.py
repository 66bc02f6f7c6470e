"""`runs/<name>/`: the recipe, metrics.json (the run's whole state), a log, one folder per stage.

The folder is created whole (marker, recipe.yaml and an empty metrics.json in one rename), and
metrics.json is rewritten atomically after the baseline and after every completed stage, so a
run killed at any point resumes from the last thing that finished. `--fresh` and `--resume`
touch only a folder that is an mfmaccel run folder (its `.mfmaccel-output` marker, or the
recipe.yaml an earlier runner wrote); anything else at `runs/<name>` is refused untouched.
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
from mfmaccel.fileio import (
    atomic_directory,
    atomic_write_json,
    is_mfmaccel_output,
    mark_output,
    protected_folder,
)
from mfmaccel.pipeline.recipe import Recipe, read_recipe_file
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
        """The metrics of the model going on: the last kept stage's, else the baseline."""
        kept = [stage for stage in self.stages if stage.kept]
        return kept[-1].after if kept else self.baseline


class RunDirectory:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.metrics_path = root / "metrics.json"

    def stage_dir(self, index: int, label: str) -> Path:
        return self.root / "stages" / f"{index:02d}-{label}"

    def start(self, recipe: Recipe, *, resume: bool, fresh: bool) -> RunState:
        """A new state, or the saved one when resuming the same recipe."""
        recipe_dict = recipe.model_dump(mode="json")
        self._check_is_ours()
        held = self.root.is_dir() and any(self.root.iterdir())
        if held and resume:
            return self._saved_state(recipe_dict)
        if held and not fresh:
            raise UserInputError(
                f"{self.root} already holds a run; add --resume to continue it or --fresh "
                "to start over"
            )
        if held and not is_mfmaccel_output(self.root):
            mark_output(self.root, "mfmaccel run (an earlier version)")  # so it can be replaced
        state = RunState(recipe=recipe_dict)
        with atomic_directory(self.root) as tmp:
            (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe_dict, sort_keys=False))
            (tmp / self.metrics_path.name).write_text(json.dumps(state.to_dict(), indent=2))
        return state

    def _check_is_ours(self) -> None:
        """Refuse, before touching it, a `runs/<name>` that is not an mfmaccel run folder."""
        reason = protected_folder(self.root)
        if reason is not None:
            raise UserInputError(f"{self.root} {reason}; choose another --runs-dir or recipe "
                                 "name (nothing was deleted)")
        if self.root.is_symlink() or (self.root.exists() and not self.root.is_dir()):
            raise UserInputError(f"{self.root} is not a folder; choose another --runs-dir or "
                                 "recipe name (nothing was deleted)")
        if self.root.is_dir() and any(self.root.iterdir()) and not self._is_run_folder():
            raise UserInputError(
                f"{self.root} holds files that are not an mfmaccel run; choose another "
                "--runs-dir or recipe name, or move them away (nothing was deleted)")

    def _is_run_folder(self) -> bool:
        """Its marker, or (from before the marker existed) the recipe.yaml a runner wrote."""
        if is_mfmaccel_output(self.root):
            return True
        saved = self._saved_recipe()
        return isinstance(saved, dict) and saved.get("name") == self.root.name

    def _saved_recipe(self) -> object:
        """The recipe.yaml the runner wrote (None if absent or unreadable: not ours)."""
        path = self.root / "recipe.yaml"
        try:
            return read_recipe_file(path) if path.is_file() else None
        except UserInputError:
            return None

    def _saved_state(self, recipe_dict: dict[str, Any]) -> RunState:
        """The state an interrupted run of this very recipe left (nothing measured yet if it
        was killed before its first save)."""
        if self.metrics_path.is_file():
            try:
                state = RunState.from_dict(json.loads(self.metrics_path.read_text()))
            except (ValueError, KeyError, TypeError):
                raise UserInputError(f"{self.metrics_path} is damaged; rerun with --fresh to "
                                     "start over") from None
        else:
            saved = self._saved_recipe()
            state = RunState(recipe=saved if isinstance(saved, dict) else {})
        if _normalised(state.recipe) != recipe_dict:
            raise UserInputError(
                f"{self.root} was started with a different recipe; rerun with --fresh "
                "or give the recipe a new name"
            )
        state.recipe = recipe_dict
        if not is_mfmaccel_output(self.root):
            mark_output(self.root, "mfmaccel run (an earlier version)")
        return state

    def save(self, state: RunState) -> None:
        atomic_write_json(self.metrics_path, state.to_dict())

    def clear_stage_dir(self, index: int, label: str) -> Path:
        """An empty folder for a stage about to run (a killed attempt may have left files)."""
        folder = self.stage_dir(index, label)  # inside this run folder: labels are plain names
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with (self.root / "log.txt").open("a") as handle:
            handle.write(f"{stamp} {message}\n")


def _normalised(recipe: object) -> dict[str, Any] | None:
    """A saved recipe with today's defaults filled in (None if it no longer validates), so a
    run saved before a new optional key existed still resumes."""
    try:
        return Recipe.model_validate(recipe).model_dump(mode="json")
    except ValueError:
        return None

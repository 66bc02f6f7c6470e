"""The recipe: a YAML file naming a model, how to evaluate it, and the stages to run.

Validated with pydantic before any work starts; unknown keys anywhere are errors, and each
stage's `params` are checked against that stage's own schema. The name is a plain folder name
(it becomes `runs/<name>`); a file over `MAX_RECIPE_BYTES`, not UTF-8, not YAML or not a
mapping is refused in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mfmaccel.errors import UserInputError
from mfmaccel.pipeline.registry import stage_params

BUILTIN_RECIPES = Path(__file__).parent / "recipes"
MAX_RECIPE_BYTES = 1 << 20  # a recipe is a few lines; anything this big is not one
NAME_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
MAX_NAME_LENGTH = 100
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: faster


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_run_name(name: str) -> str:
    """A plain folder name (letters, digits, `_`, `-`, `.`; not starting with `.`), so that
    `runs/<name>` stays one new folder inside `runs/`."""
    if not name or len(name) > MAX_NAME_LENGTH or name.startswith(".") or not set(
            name) <= NAME_CHARACTERS:
        raise ValueError(
            f"'{name[:MAX_NAME_LENGTH]}' is not a plain name; use up to {MAX_NAME_LENGTH} "
            "letters, digits, '_', '-' or '.', not starting with '.'")
    return name


class EvalSpec(Strict):
    """Measured at the start and after every stage."""

    tasks: list[Literal["ppl", "humaneval", "medvqa", "medvqa2"]] = Field(default_factory=list)
    limit: int | None = Field(default=None, ge=1,
                              description="subset size for humaneval/medvqa/medvqa2")
    ppl_tokens: int = Field(default=4096, ge=16)
    ppl_context: int | None = Field(default=None, ge=2, description="perplexity window in "
                                    "tokens (default 512, or the model's window if shorter)")
    max_new_tokens: int = Field(default=384, ge=1, description="humaneval completion length")
    speed: bool = True
    speed_tokens: int = Field(default=16, ge=2)


class StageSpec(Strict):
    stage: str
    name: str | None = None  # a label, unique in the recipe; defaults to the stage name
    params: dict[str, Any] = Field(default_factory=dict)
    # The stage's bar, against the run's baseline: per task, the most its headline may fall
    # (pass@1 and accuracy in absolute terms, 0.02 = 2 points; perplexity as a relative rise,
    # 0.05 = 5%). A stage that misses it is recorded, and the model from before it goes on.
    max_drop: dict[str, float] = Field(default_factory=dict)

    @field_validator("max_drop")
    @classmethod
    def _drops_in_range(cls, drops: dict[str, float]) -> dict[str, float]:
        for task, drop in drops.items():
            if not 0 <= drop <= 1:
                raise ValueError(f"max_drop for {task} must lie in [0, 1], got {drop}")
        return drops

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        return None if name is None else check_run_name(name)  # it names a folder too

    @property
    def label(self) -> str:
        return self.name or self.stage


class Recipe(Strict):
    name: str
    model: str
    seed: int = 0
    evaluation: EvalSpec = Field(default_factory=EvalSpec)
    stages: list[StageSpec] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        return check_run_name(name)

    @model_validator(mode="after")
    def _unique_labels(self) -> Recipe:
        seen: set[str] = set()
        for spec in self.stages:
            if spec.label in seen:
                raise ValueError(
                    f"two stages are labelled '{spec.label}'; give one a distinct name")
            seen.add(spec.label)
        return self

    @model_validator(mode="after")
    def _bars_on_measured_tasks(self) -> Recipe:
        for spec in self.stages:
            for task in spec.max_drop:
                if task not in self.evaluation.tasks:
                    raise ValueError(f"stage '{spec.label}' has a max_drop on '{task}', which "
                                     "evaluation.tasks does not measure; add it there")
        return self


def _one_line(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "recipe"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = f"unknown key '{first['loc'][-1]}'"
    return f"{source}: {where}: {message}"


def parse_recipe(data: Any, source: str = "recipe") -> Recipe:
    """A validated recipe from parsed YAML; one clear line on any error."""
    if not isinstance(data, dict):
        raise UserInputError(f"{source}: a recipe is a mapping with name, model and stages")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise UserInputError(_one_line(err, source) + " (see docs/pipeline.md)") from None
    for index, spec in enumerate(recipe.stages):
        stage_params(spec.stage, spec.params, f"{source}: stages.{index}")
    return recipe


def load_recipe(path_or_name: str | Path) -> Recipe:
    """A recipe file, or the name of a built-in recipe (`medical`, `code`, ...)."""
    path = Path(path_or_name)
    if not path.is_file():
        builtin = BUILTIN_RECIPES / f"{path_or_name}.yaml"
        if not builtin.is_file():
            names = ", ".join(sorted(p.stem for p in BUILTIN_RECIPES.glob("*.yaml")))
            raise UserInputError(
                f"recipe {path_or_name} does not exist; pass a YAML file or one of: {names}"
            )
        path = builtin
    return parse_recipe(read_recipe_file(path), str(path))


def read_recipe_file(path: Path) -> Any:
    """The parsed YAML of a recipe file; one line for one too big, not UTF-8 or not YAML."""
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise UserInputError(f"{path} is {size:,} bytes, over the {MAX_RECIPE_BYTES:,}-byte "
                             "limit for a recipe; check that it is the right file")
    try:
        return yaml.load(path.read_bytes().decode("utf-8"), Loader=SAFE_LOADER)
    except UnicodeDecodeError as err:
        raise UserInputError(f"{path}: not UTF-8 text (byte {err.start}); save the recipe as "
                             "UTF-8") from None
    except yaml.YAMLError as err:
        first = (str(err).splitlines() or ["a syntax error"])[0]
        raise UserInputError(f"{path}: not valid YAML ({first}); fix the file") from None

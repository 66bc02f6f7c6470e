"""The recipe: a YAML file naming a model, how to evaluate it, and the stages to run.

Validated with pydantic before any work starts; unknown keys anywhere are errors, and each
stage's `params` are checked against that stage's own schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mfmaccel.errors import UserInputError

BUILTIN_RECIPES = Path(__file__).parent / "recipes"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvalSpec(Strict):
    """Measured at the start and after every stage."""

    tasks: list[Literal["ppl", "humaneval", "medvqa"]] = Field(default_factory=list)
    limit: int | None = Field(default=None, ge=1, description="subset size for humaneval/medvqa")
    ppl_tokens: int = Field(default=4096, ge=16)
    max_new_tokens: int = Field(default=384, ge=1, description="humaneval completion length")
    speed: bool = True
    speed_tokens: int = Field(default=16, ge=2)


class StageSpec(Strict):
    stage: str
    name: str | None = None  # a label, unique in the recipe; defaults to the stage name
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name or self.stage


class Recipe(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    model: str
    seed: int = 0
    evaluation: EvalSpec = Field(default_factory=EvalSpec)
    stages: list[StageSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_labels(self) -> Recipe:
        labels = [s.label for s in self.stages]
        duplicate = next((x for x in labels if labels.count(x) > 1), None)
        if duplicate:
            raise ValueError(f"two stages are labelled '{duplicate}'; give one a distinct name")
        return self


def _one_line(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "recipe"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = f"unknown key '{first['loc'][-1]}'"
    return f"{source}: {where}: {message}"


def parse_recipe(data: Any, source: str = "recipe") -> Recipe:
    """A validated recipe from parsed YAML; one clear line on any error."""
    from mfmaccel.pipeline.registry import stage_params

    if not isinstance(data, dict):
        raise UserInputError(f"{source}: a recipe is a mapping with name, model and stages")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise UserInputError(_one_line(err, source) + " (see docs/pipeline.md)") from None
    for index, spec in enumerate(recipe.stages):
        stage_params(spec, f"{source}: stages.{index}")
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
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserInputError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return parse_recipe(data, str(path))

"""Recipe validation: every mistake is one clear line before any work starts."""

from __future__ import annotations

import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.pipeline.recipe import load_recipe, parse_recipe

GOOD = {"name": "r", "model": "tiny-llama", "stages": [{"stage": "evaluate"}]}


def test_good_recipe_and_defaults() -> None:
    recipe = parse_recipe(GOOD)
    assert recipe.seed == 0 and recipe.evaluation.speed
    assert [s.label for s in recipe.stages] == ["evaluate"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"modle": "x"}, "unknown key 'modle'"),
        ({"evaluation": {"tasks": ["ppl"], "limt": 3}}, "unknown key 'limt'"),
        ({"evaluation": {"tasks": ["bleu"]}}, "evaluation.tasks.0"),
        ({"stages": [{"stage": "teleport"}]}, "unknown stage 'teleport'"),
        ({"stages": [{"stage": "evaluate", "params": {"lr": 1}}]},
         "unknown key 'lr' for stage 'evaluate'"),
        ({"stages": [{"stage": "evaluate"}, {"stage": "evaluate"}]}, "two stages are labelled"),
        ({"name": "has space"}, "name"),
    ],
)
def test_bad_recipes(change: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        parse_recipe({**GOOD, **change})


def test_not_a_mapping() -> None:
    with pytest.raises(UserInputError, match="a recipe is a mapping"):
        parse_recipe(["stage"])


def test_builtin_and_file_recipes(tmp_path) -> None:
    assert load_recipe("quick").model == "smollm2-135m"
    assert load_recipe("code").evaluation.tasks == ["humaneval", "ppl"]
    medical = load_recipe("medical")
    assert medical.model == "medvlm-base"
    assert [s.stage for s in medical.stages] == ["finetune", "hardware"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(UserInputError, match="not valid YAML"):
        load_recipe(bad)
    with pytest.raises(UserInputError, match="does not exist.*quick"):
        load_recipe(tmp_path / "missing.yaml")

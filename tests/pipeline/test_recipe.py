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
    fast = load_recipe("code-fast")
    assert [s.stage for s in fast.stages] == ["quantize", "fuse", "decode"]
    assert fast.stages[0].max_drop == {"humaneval": 0.02} and fast.evaluation.limit is None
    medical = load_recipe("medical")
    assert medical.model == "medvlm-base"
    assert [s.stage for s in medical.stages] == ["finetune", "hardware"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(UserInputError, match="not valid YAML"):
        load_recipe(bad)
    with pytest.raises(UserInputError, match="does not exist.*quick"):
        load_recipe(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", [".", "..", ".hidden", "a/b", "../x", "", "x" * 101, "né"])
def test_recipe_and_stage_names_are_plain_folder_names(name: str) -> None:
    with pytest.raises(UserInputError, match="not a plain name"):
        parse_recipe({**GOOD, "name": name})
    with pytest.raises(UserInputError, match="stages.0.name.*not a plain name"):
        parse_recipe({**GOOD, "stages": [{"stage": "evaluate", "name": name}]})
    assert parse_recipe({**GOOD, "name": "v1.2_final-run"}).name == "v1.2_final-run"


def test_too_big_not_utf8_or_not_a_mapping_is_one_line(tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_bytes(b"name: r\n" + b"#" * (1 << 20))
    with pytest.raises(UserInputError, match="over the 1,048,576-byte limit"):
        load_recipe(path)
    path.write_bytes(b"name: r\xff\xfe\nmodel: tiny-llama\n")
    with pytest.raises(UserInputError, match="not UTF-8"):
        load_recipe(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(UserInputError, match="a recipe is a mapping"):
        load_recipe(path)


def test_many_stages_are_checked_in_one_pass() -> None:
    """Labels are checked with a set (the old `labels.count` per label was quadratic)."""
    stages = [{"stage": "evaluate", "name": f"s{i}"} for i in range(20000)]
    assert len(parse_recipe({**GOOD, "stages": stages}).stages) == 20000
    with pytest.raises(UserInputError, match="two stages are labelled 's0'"):
        parse_recipe({**GOOD, "stages": [*stages, {"stage": "evaluate", "name": "s0"}]})


def test_the_perplexity_context_is_a_recipe_setting() -> None:
    assert parse_recipe(GOOD).evaluation.ppl_context is None  # 512, or a shorter model window
    recipe = parse_recipe({**GOOD, "evaluation": {"tasks": ["ppl"], "ppl_context": 128}})
    assert recipe.evaluation.ppl_context == 128
    with pytest.raises(UserInputError, match="ppl_context"):
        parse_recipe({**GOOD, "evaluation": {"ppl_context": 1}})

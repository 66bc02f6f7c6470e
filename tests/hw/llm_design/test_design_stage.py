"""The `design` stage: the run's model writes Verilog; its record and notes are kept."""

from __future__ import annotations

import json

import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.pipeline.recipe import parse_recipe
from mfmaccel.pipeline.runner import run_recipe
from tests.hw.llm_design.conftest import EXCERPT, needs_icarus


@needs_icarus
def test_design_stage_records_pass_rates_and_leaves_the_model(tmp_path) -> None:
    recipe = parse_recipe({
        "name": "rtl", "model": "tiny-qwen2",
        "evaluation": {"tasks": [], "speed_tokens": 4},
        "stages": [{"stage": "design", "params": {"problems": "Prob004", "data": str(EXCERPT),
                                                  "rounds": 1, "max_new_tokens": 8,
                                                  "draft": None}}],
    })
    state = run_recipe(recipe, runs_dir=tmp_path, log=lambda m: None)
    stage = state.stages[0]
    record = json.loads((tmp_path / "rtl" / stage.artifacts[0]).read_text())
    assert record["problems"] == 1 and record["tasks"][0]["task"] == "Prob004_vector2"
    assert record["tasks"][0]["tokens"] >= 1  # a random model's reply, counted
    assert stage.notes.startswith("pass@1 ") and "with feedback (1 rounds, k=1)" in stage.notes


def test_design_stage_refuses_bad_params() -> None:
    with pytest.raises(UserInputError, match="rounds"):
        parse_recipe({"name": "rtl", "model": "tiny-qwen2",
                      "stages": [{"stage": "design", "params": {"rounds": 0}}]})

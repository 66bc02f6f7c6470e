"""The `spiking` stage: the run's encoder as a spiking network, its record kept."""

from __future__ import annotations

import json

import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.pipeline.recipe import parse_recipe
from mfmaccel.pipeline.runner import run_recipe
from mfmaccel.report.html import write_report


def test_spiking_stage_settles_the_encoder_bit_exact(tmp_path) -> None:
    recipe = parse_recipe({
        "name": "spk", "model": "tiny-bert",
        "evaluation": {"tasks": [], "speed_tokens": 4},
        "stages": [{"stage": "spiking", "params": {"levels": 16, "inputs": 2,
                                                   "calibration": 4, "steps": [2, 500],
                                                   "max_steps": 500, "arch": "edge"}}],
    })
    state = run_recipe(recipe, runs_dir=tmp_path, log=lambda m: None)
    stage = state.stages[0]
    record = json.loads((tmp_path / "spk" / stage.artifacts[0]).read_text())
    assert record["bit_exact"] is True and record["settled"] == record["batches"]
    assert "bit-exact: True" in stage.notes and "ACs per integer MAC" in stage.notes
    assert [e["steps"] for e in record["energy"]] == ["2", "settled"]
    assert "on edge-spiking" in stage.notes and "break-even spike rate" in stage.notes
    assert record["memory"]["average_bits"] > 8 and "bits a weight" in stage.notes
    page = write_report(tmp_path / "spk").read_text()
    section = page[page.index("Spiking network (tiny-bert)"):]
    for row in ("float", "integer program", "spiking, 2 steps", "spiking, settled (step"):
        assert f"<td>{row}" in section
    assert "on edge-spiking against edge" in section


def test_spiking_stage_mixes_weight_bits_to_an_average(tmp_path) -> None:
    recipe = parse_recipe({
        "name": "spk", "model": "tiny-bert",
        "evaluation": {"tasks": [], "speed_tokens": 4},
        "stages": [{"stage": "spiking", "params": {"inputs": 2, "calibration": 4,
                                                   "steps": [2], "avg_bits": 4.5}}],
    })
    state = run_recipe(recipe, runs_dir=tmp_path, log=lambda m: None)
    record = json.loads((tmp_path / "spk" / state.stages[0].artifacts[0]).read_text())
    assert record["memory"]["average_bits"] <= 4.5 and record["bit_exact"] is True


def test_a_wrong_spiking_key_is_refused() -> None:
    with pytest.raises(UserInputError, match="unknown key 'level' for stage 'spiking'"):
        parse_recipe({"name": "x", "model": "tiny-bert",
                      "stages": [{"stage": "spiking", "params": {"level": 4}}]})


def test_an_unknown_arch_is_refused_before_the_run(tmp_path) -> None:
    recipe = parse_recipe({
        "name": "spk", "model": "tiny-bert", "evaluation": {"tasks": [], "speed_tokens": 4},
        "stages": [{"stage": "spiking", "params": {"arch": "huge"}}]})
    with pytest.raises(UserInputError, match="unknown architecture preset 'huge'"):
        run_recipe(recipe, runs_dir=tmp_path, log=lambda m: None)

"""The `hardware` stage: the run's current model (here pruned) priced on an accelerator, its
record kept and drawn as a roofline in the report."""

from __future__ import annotations

import json

from mfmaccel.pipeline.recipe import parse_recipe
from mfmaccel.pipeline.runner import run_recipe
from mfmaccel.report import write_report


def test_hardware_stage_prices_the_pruned_model(tmp_path) -> None:
    recipe = parse_recipe({
        "name": "hw", "model": "tiny-llama",
        "evaluation": {"tasks": ["ppl"], "ppl_tokens": 200, "speed_tokens": 4},
        "stages": [{"stage": "hardware", "params": {"arch": "edge", "seq_len": 32}},
                   {"stage": "prune", "params": {"mlp_fraction": 0.5, "calib_tokens": 64}},
                   {"stage": "hardware", "name": "hardware-pruned",
                    "params": {"arch": "edge", "seq_len": 32}}],
    })
    state = run_recipe(recipe, runs_dir=tmp_path, log=lambda m: None)
    first, _, second = state.stages
    records = [json.loads((tmp_path / "hw" / s.artifacts[0]).read_text())
               for s in (first, second)]
    assert all(r["arch"] == "edge" and r["latency_ms"] > 0 for r in records)
    assert records[1]["macs"] < records[0]["macs"]  # half the MLP channels are gone
    assert "ms" in second.notes and "mm²" in second.notes
    page = write_report(tmp_path / "hw").read_text()
    assert page.count("Roofline on the accelerator") == 2


def test_hardware_stage_takes_the_fused_schedules_asked_for(tmp_path) -> None:
    stages = [{"stage": "hardware", "name": name, "params": {"seq_len": 256, "fusion": fusion}}
              for name, fusion in (("none", "none"), ("all", "all"))]
    recipe = parse_recipe({"name": "fused", "model": "tiny-llama",
                           "evaluation": {"tasks": ["ppl"], "ppl_tokens": 200,
                                          "speed_tokens": 4}, "stages": stages})
    state = run_recipe(recipe, runs_dir=tmp_path, log=lambda m: None)
    unfused, fused = (json.loads((tmp_path / "fused" / s.artifacts[0]).read_text())
                      for s in state.stages)
    assert unfused["fusion"] == [] and fused["fusion"] == ["activation", "norm", "attention",
                                                           "mlp"]
    assert fused["dram_bytes"] < unfused["dram_bytes"]

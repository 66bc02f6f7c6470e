"""`mfmaccel generate`, `mfmaccel cascade` and the `decode` stage, end to end on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mfmaccel.cli import app
from mfmaccel.models import load_model
from mfmaccel.pipeline.recipe import parse_recipe
from mfmaccel.pipeline.runner import run_recipe
from mfmaccel.runtime.engine import greedy_generate

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize("draft", [[], ["--draft", "lookup"], ["--draft", "layers:1"],
                                   ["--draft", "tiny-llama", "--gamma", "3"],
                                   ["--draft", "layers:1", "--draft-vocab", "100"],
                                   ["--draft", "self:int8"]])
def test_generate_prints_the_completion_alone(draft) -> None:
    result = run("generate", "--model", "tiny-llama", "--prompt", "def f(x):",
                 "--max-new-tokens", "12", *draft)
    assert result.exit_code == 0, result.output
    model = load_model("tiny-llama")
    ids = model.tokenizer("def f(x):", return_tensors="pt").input_ids
    tokens = greedy_generate(model.module, ids, 12).tokens
    assert result.stdout == model.tokenizer.decode(tokens, skip_special_tokens=True) + "\n"


def test_generate_samples_reproducibly_with_a_seed() -> None:
    args = ["generate", "--model", "tiny-llama", "--prompt", "abc", "--max-new-tokens", "8",
            "--temperature", "1.0", "--top-k", "20"]
    assert run(*args, "--seed", "3").stdout == run(*args, "--seed", "3").stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--prompt", ""], "prompt is empty"),
    (["--prompt", "x", "--gamma", "0", "--draft", "lookup"], "gamma"),
    (["--prompt", "x", "--draft", "layers:x"], "layers:8"),
    (["--prompt", "x", "--draft", "tiny-nothing"], "unknown"),
    (["--prompt", "x", "--max-new-tokens", "0"], "at least 1"),
    (["--prompt", "x", "--temperature", "-1"], "temperature"),
])
def test_generate_bad_input_is_one_line(args, message) -> None:
    result = run("generate", "--model", "tiny-llama", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_cascade_from_eval_records_and_bad_input(tmp_path) -> None:
    records = []
    for index in range(2):
        out = tmp_path / f"e{index}.json"
        result = run("eval", "--model", "tiny-llama", "--task", "humaneval", "--limit", "4",
                     "--max-new-tokens", "8", "--seed", "0", "--out", str(out))
        assert result.exit_code == 0, result.output
        records.append(str(out))
    out = tmp_path / "cascade.json"
    result = run("cascade", "--model", "tiny-llama", "--model", "tiny-llama",
                 "--eval", records[0], "--eval", records[1], "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["problems"] == 4 and report["calibration_problems"] == 2
    assert report["held_out"]["pass_rate"] == 0.0  # a random tiny model solves nothing
    bad = run("cascade", "--model", "tiny-llama", "--eval", records[0])
    assert bad.exit_code == 2 and "at least two" in bad.output


def test_only_models_that_can_escalate_write_tests(tmp_path, monkeypatch) -> None:
    """The largest model's answer always stands, so writing tests would only add to its cost,
    the baseline the cascade is measured against."""
    from mfmaccel.decode import cascade

    writers, generate_tests = [], cascade.generate_tests
    monkeypatch.setattr(cascade, "generate_tests", lambda model, problems, count:
                        writers.append(model.name) or generate_tests(model, problems, count=count,
                                                                     max_new_tokens=8))
    result = run("cascade", "--model", "tiny-llama", "--model", "tiny-qwen2", "--limit", "4",
                 "--test-lines", "2", "--out", str(tmp_path / "c.json"))
    assert result.exit_code == 0, result.output
    assert writers == ["tiny-llama"]


def test_vqa_cascade_calibrates_on_val_and_reports_on_test(tmp_path) -> None:
    out = tmp_path / "vqa.json"
    result = run("cascade", "--task", "medvqa", "--model", "tiny-llava", "--model",
                 "tiny-llava", "--limit", "4", "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["problems"] == 4 and report["calibration_problems"] == 4
    assert report["held_out"]["time_fraction"] > 0 and "val" in report["calibrated_on"]
    bad = run("cascade", "--task", "medvqa", "--model", "a", "--model", "b", "--samples", "2")
    assert bad.exit_code == 2 and "--task humaneval" in bad.output
    bad = run("cascade", "--task", "mmlu", "--model", "a", "--model", "b")
    assert bad.exit_code == 2 and "mmlu" in bad.output
    no_val = Path(__file__).parent.parent / "fixtures" / "vqa_rad_tiny"  # train and test only
    bad = run("cascade", "--task", "medvqa", "--model", "a", "--model", "b", "--data", str(no_val))
    assert bad.exit_code == 2 and "val questions" in bad.output


def test_decode_stage_times_every_draft_and_measures_speed_through_its_choice(
        tmp_path, monkeypatch) -> None:
    from mfmaccel.pipeline import runner
    from mfmaccel.pipeline.stages import decode

    measured = []
    measure = runner.measure
    monkeypatch.setattr(runner, "measure", lambda *a: measured.append(1) or measure(*a))
    recipe = parse_recipe({
        "name": "d", "model": "tiny-llama",
        "evaluation": {"tasks": ["ppl"], "ppl_tokens": 64, "speed_tokens": 4},
        "stages": [{"stage": "decode", "params": {"drafts": ["layers:1", "lookup"],
                                                  "prompts": 2, "max_new_tokens": 8}}],
    })
    state = run_recipe(recipe, runs_dir=tmp_path, log=lambda _: None)
    (stage,) = state.stages
    stage_dir = next((tmp_path / "d").rglob(decode.RECORD)).parent
    summary = json.loads((stage_dir / decode.RECORD).read_text())
    assert [r["draft"] for r in summary["drafts"]] == ["layers:1", "lookup"]
    assert all(r["identical_on_every_prompt"] and len(r["prompts"]) == 2
               for r in summary["drafts"])
    assert all(torch.tensor(curve).le(1).all() for curve in stage.curves.values())
    # quality carries over (one full measurement: the baseline); speed goes through the choice
    assert len(measured) == 1 and stage.after.quality == stage.before.quality
    chosen = summary["chosen"]
    engine = f"mfmaccel+{chosen}" if chosen else "mfmaccel"
    assert stage.after.details["speed"]["engine"] == engine
    assert ("chosen: " in stage.notes) == bool(chosen)
    model = decode.reapply(load_model("tiny-llama"), stage_dir)  # what a resumed run does
    assert model.meta.get("draft") == chosen


def test_the_fastest_lossless_draft_is_chosen_if_it_beats_the_plain_loop() -> None:
    from mfmaccel.pipeline.stages.decode import _fastest_lossless

    def row(draft, speedup, identical=True):
        return {"draft": draft, "speedup_over_plain_greedy": speedup,
                "identical_on_every_prompt": identical}

    assert _fastest_lossless([row("a", 1.4), row("b", 2.0, False), row("c", 1.8)]) == "c"
    assert _fastest_lossless([row("a", 0.9), row("b", 3.0, False)]) is None

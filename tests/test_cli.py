"""The command line: results land as JSON; bad input gives one line, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mfmaccel.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_eval_ppl_writes_json(tmp_path) -> None:
    out = tmp_path / "ppl.json"
    result = run("eval", "--model", "tiny-llama", "--task", "ppl", "--max-tokens", "300",
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["tokens"] == 299 and record["perplexity"] > 1


def test_eval_medvqa_on_tiny_llava(tmp_path) -> None:
    out = tmp_path / "vqa.json"
    result = run("eval", "--model", "tiny-llava", "--task", "medvqa", "--limit", "6",
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["n"] == 6 and "overall" in record["majority_baseline"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "gpt-17", "--task", "ppl"], "unknown model 'gpt-17'"),
        (["--model", "tiny-bert", "--task", "ppl"], "needs a causal-lm model"),
        (["--model", "tiny-llama", "--task", "medvqa"], "needs a vlm model"),
        (["--model", "tiny-llama", "--task", "ppl", "--data", "/no/such.txt"], "does not exist"),
        (["--model", "/no/such/folder", "--task", "ppl"], "does not exist"),
        (["--model", "tiny-llama", "--task", "humaneval", "--workers", "0"],
         "--workers must be at least 1, got 0"),
        (["--model", "tiny-llama", "--task", "humaneval", "--scheduler", "localhost:8786"],
         "tcp://HOST:PORT"),
        (["--model", "tiny-llama", "--task", "ppl", "--workers", "2"],
         "apply to --task humaneval only"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, message) -> None:
    out = tmp_path / "out.json"
    result = run("eval", *args, "--out", str(out))
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.iterdir())


def test_malformed_jsonl_for_humaneval(tmp_path) -> None:
    bad = tmp_path / "problems.jsonl"
    bad.write_text('{"task_id": "x/0"}\nnot json\n')
    result = run("eval", "--model", "tiny-llama", "--task", "humaneval", "--data", str(bad),
                 "--out", str(tmp_path / "o.json"))
    assert result.exit_code == 2 and "line" in result.output.lower()
    assert not (tmp_path / "o.json").exists()


def test_models_lists_the_zoo() -> None:
    result = run("models")
    assert result.exit_code == 0 and "smollm2-135m" in result.output


def test_run_writes_metrics_and_report_then_resumes(tmp_path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nmodel: tiny-llama\nevaluation: {tasks: [ppl], ppl_tokens: 200}\n"
                      "stages:\n  - stage: evaluate\n")
    runs = tmp_path / "runs"
    first = run("run", str(recipe), "--runs-dir", str(runs))
    assert first.exit_code == 0, first.output
    assert (runs / "r" / "metrics.json").is_file() and (runs / "r" / "report.html").is_file()
    again = run("run", str(recipe), "--runs-dir", str(runs))
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = run("run", str(recipe), "--runs-dir", str(runs), "--resume")
    assert resumed.exit_code == 0 and "skipped" in resumed.output
    report = run("report", str(runs / "r"))
    assert report.exit_code == 0 and "report.html" in report.output


def test_run_rejects_bad_recipe_before_work(tmp_path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nmodel: tiny-llama\nstages:\n  - stage: quantise\n")
    result = run("run", str(recipe), "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code == 2 and "unknown stage 'quantise'" in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("args", "value", "choices"), [
    (["eval", "--model", "tiny-llama", "--task", "bleu"], "bleu", "'ppl', 'humaneval'"),
    (["eval", "--model", "tiny-llama", "--task", "medvqa", "--mode", "guess"], "guess",
     "'rank', 'generate'"),
    (["quantize", "--model", "tiny-llama", "--out", "q", "--method", "awq"], "awq",
     "'rtn', 'gptq'"),
    (["quantize", "--model", "tiny-llama", "--out", "q", "--uniform", "int8-c-sym",
      "--activations", "channel"], "channel", "'token', 'tensor'"),
    (["cascade", "--model", "a", "--model", "b", "--task", "ppl"], "ppl",
     "'humaneval', 'medvqa'"),
    (["hw", "simulate", "--model", "roberta-base", "--arch", "tpu"], "tpu",
     "'swifttron', 'edge', 'large'"),
    (["hw", "simulate", "--model", "roberta-base", "--attention", "half"], "half",
     "'tiled', 'full'"),
    (["hw", "dse", "--model", "roberta-base", "--arch", "tpu"], "tpu", "'swifttron', 'edge'"),
])
def test_a_value_outside_the_choices_is_one_line_exit_2(tmp_path, monkeypatch, args, value,
                                                        choices) -> None:
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: Invalid value for '--"), lines
    assert f"'{value}' is not one of {choices}" in lines[0]
    assert not list(tmp_path.iterdir())


def test_choice_flags_show_their_choices() -> None:
    for args, shown in ((["quantize"], "<rtn|gptq>"), (["quantize"], "<token|tensor>"),
                        (["eval"], "<rank|generate>"),
                        (["hw", "simulate"], "<swifttron|edge|large>"),
                        (["hw", "simulate"], "<tiled|full>")):
        result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and shown in result.output, result.output


def test_a_missing_option_keeps_typers_usage_message() -> None:
    result = run("quantize", "--out", "q")
    assert result.exit_code == 2 and "Missing option '--model'" in result.output

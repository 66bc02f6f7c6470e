"""`mfmaccel quantize` and `mfmaccel prune` on tiny models: packed/pruned folders that load;
bad budgets and bit-widths end with one line, exit code 2, nothing written."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from mfmaccel.cli import app
from mfmaccel.models import load_model

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_quantize_to_a_byte_budget(tmp_path) -> None:
    out = tmp_path / "q"
    fp16 = 2 * load_model("tiny-llama").params
    result = run("quantize", "--model", "tiny-llama", "--out", str(out), "--budget-bytes",
                 str(int(0.3 * fp16)), "--specs", "int2-g16,int4-g16", "--calib-tokens", "256")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "compression.json").read_text())
    assert record["bytes"] <= 0.3 * fp16 and record["sensitivity"]["blocks"]
    model = load_model(str(out))
    with torch.inference_mode():
        assert torch.isfinite(model.module(input_ids=torch.tensor([[1, 2, 3]])).logits).all()


def test_quantize_uniform_and_prune(tmp_path) -> None:
    result = run("quantize", "--model", "tiny-qwen2", "--out", str(tmp_path / "u"),
                 "--uniform", "int8-c", "--method", "rtn")
    assert result.exit_code == 0, result.output
    result = run("prune", "--model", "tiny-llama", "--out", str(tmp_path / "p"), "--blocks", "1",
                 "--mlp-fraction", "0.5", "--calib-tokens", "256")
    assert result.exit_code == 0, result.output
    pruned = load_model(str(tmp_path / "p"))
    assert pruned.module.config.num_hidden_layers == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget-bytes", "10"], "below the smallest model"),
        (["--avg-bits", "4", "--budget-bytes", "100000"], "exactly one budget"),
        (["--uniform", "int1-g16"], "unsupported bit-width 1"),
        (["--uniform", "four bits"], "cannot read bit-width spec"),
        (["--avg-bits", "4", "--uniform", "int4-g16"], "takes no budget"),
        (["--avg-bits", "4", "--activations", "token"], "need --uniform"),
        (["--uniform", "int4-g16", "--activations", "token"], "need int8-c-sym weights"),
        (["--uniform", "int8-c-sym", "--activations", "channel"],
         "'channel' is not one of 'token', 'tensor'"),
        (["--avg-bits", "4", "--workers", "0"], "--workers must be at least 1, got 0"),
        (["--avg-bits", "4", "--scheduler", "localhost:8786"], "tcp://HOST:PORT"),
        (["--uniform", "int8-c", "--workers", "2"], "--uniform measures none"),
    ],
)
def test_bad_budgets_are_one_line_exit_2(tmp_path, args, message) -> None:
    out = tmp_path / "q"
    result = run("quantize", "--model", "tiny-llama", "--out", str(out), "--calib-tokens",
                 "256", "--specs", "int2-g16,int4-g16", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("model", "args", "message"),
    [("tiny-vit", ["--avg-bits", "4"], "is a vision model"),
     ("tiny-bert", ["--max-ppl-increase", "0.1"], "has no perplexity")],
)
def test_models_quantize_cannot_take_are_refused_before_loading(tmp_path, model, args,
                                                                 message) -> None:
    result = run("quantize", "--model", model, "--out", str(tmp_path / "q"), *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "q").exists()


def test_an_encoder_quantizes_to_a_byte_budget(tmp_path) -> None:
    fp16 = 2 * load_model("tiny-bert").params
    result = run("quantize", "--model", "tiny-bert", "--out", str(tmp_path / "q"),
                 "--budget-bytes", str(int(0.6 * fp16)), "--specs", "int4-g16,int8-g16",
                 "--calib-tokens", "256")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "q" / "compression.json").read_text())
    assert record["sensitivity"]["signal"] == "cosine" and record["bytes"] <= 0.6 * fp16
    assert load_model(str(tmp_path / "q")).kind == "encoder"


def test_prune_refuses_what_it_cannot_do(tmp_path) -> None:
    result = run("prune", "--model", "tiny-bert", "--out", str(tmp_path / "p"), "--blocks", "1")
    assert result.exit_code == 2 and "needs a causal LM or a LLaVA VLM" in result.output
    result = run("prune", "--model", "tiny-llama", "--out", str(tmp_path / "p"), "--blocks", "5")
    assert result.exit_code == 2 and "keep at least 1" in result.output
    assert not (tmp_path / "p").exists()


def test_prune_takes_the_language_model_inside_a_vlm(tmp_path) -> None:
    """A pruned LLaVA keeps its tower and projector and still answers VQA (the small end of
    the VQA cascade)."""
    from mfmaccel.data.medvqa import load_medvqa
    from mfmaccel.evaluate.vqa import vqa_accuracy

    base = load_model("medvlm-tiny")
    result = run("prune", "--model", "medvlm-tiny", "--out", str(tmp_path / "p"), "--blocks", "1",
                 "--mlp-fraction", "0.25", "--calib-tokens", "256")
    assert result.exit_code == 0, result.output
    pruned = load_model(str(tmp_path / "p"))
    assert pruned.kind == "vlm" and pruned.params < base.params
    assert pruned.module.config.text_config.num_hidden_layers == (
        base.module.config.text_config.num_hidden_layers - 1)
    assert vqa_accuracy(pruned, load_medvqa("val", per_source=1)[:2]).n == 2


def test_the_budget_search_itself_refuses_a_perplexity_budget_for_an_encoder() -> None:
    """The pipeline's quantize stage reaches `compress_to_budget` without the CLI's check."""
    from mfmaccel.compress.search import Budget, compress_to_budget
    from mfmaccel.errors import UserInputError

    with pytest.raises(UserInputError, match="has no perplexity"):
        compress_to_budget(load_model("tiny-bert"), Budget(max_ppl_increase=0.1))

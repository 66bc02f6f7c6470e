"""`mfmaccel hw design`: a run through a local endpoint, and its answers to bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mfmaccel.cli import app
from tests.hw.llm_design.conftest import EXCERPT, needs_icarus, needs_verilator, needs_yosys
from tests.hw.llm_design.test_generators import ChatServer, completion
from tests.hw.llm_design.test_loop import RIGHT

runner = CliRunner()
DATA = ["--data", str(EXCERPT)]


@needs_icarus
@needs_verilator
@needs_yosys
def test_design_through_an_endpoint_writes_its_record(tmp_path):
    server = ChatServer(completion(RIGHT, 40))
    out = tmp_path / "design.json"
    try:
        result = runner.invoke(app, ["hw", "design", "--task", "Prob004", *DATA,
                                     "--endpoint", server.url, "--api-model", "m",
                                     "--rounds", "2", "--out", str(out)])
    finally:
        server.close()
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["problems"] == 1 and record["pass_at_1"] == 1.0
    row = record["tasks"][0]
    assert row["passed"] and row["first_pass_round"] == 1 and row["tokens"] == 40
    assert row["cells"] == 0 and record["settings"]["rounds"] == 2  # byte swap: wires only


@pytest.mark.parametrize("args,words", [
    (["--task", "Prob999"], "unknown VerilogEval problem"),
    (["--task", "Prob004", "--suite", "verilog-eval"], "one of --task"),
    (["--suite", "rtllm"], "unknown suite"),
    (["--task", "Prob004", "--rounds", "0"], "--rounds must be at least 1"),
    (["--task", "Prob004", "--candidates", "2"], "need a temperature"),
    (["--task", "Prob004", "--model", "no-such-model-xyz"], "no-such-model-xyz"),
    (["--task", "Prob004", "--endpoint", "http://127.0.0.1:9/v1"], "--api-model"),
    (["--task", "Prob004", "--endpoint", "ftp://x", "--api-model", "m"], "http(s) URL"),
    (["--task", "Prob004"], "one of --model"),
    (["--task", "gemm", "--model", "x"], "not a design task yet"),
    (["--suite", "mfmaccel-units", "--problems", "requant,sofmax", "--model", "x"],
     "unknown unit task 'sofmax'"),
    (["--task", "Prob004", "--revise", "again", "--model", "x"], "unknown --revise 'again'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, words):
    out = tmp_path / "design.json"
    result = runner.invoke(app, ["hw", "design", *DATA, *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert words in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_endpoint_down_is_one_line_and_nothing_written(tmp_path):
    server = ChatServer(b"")
    url = server.url
    server.close()
    out = tmp_path / "design.json"
    result = runner.invoke(app, ["hw", "design", "--task", "Prob004", *DATA, "--endpoint", url,
                                 "--api-model", "m", "--out", str(out)])
    assert result.exit_code == 2 and "does not answer" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_out_holding_a_users_file_is_refused(tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    result = runner.invoke(app, ["hw", "design", "--task", "Prob004", *DATA, "--model",
                                 "tiny-qwen2", "--out", str(out)])
    assert result.exit_code == 2 and "not an mfmaccel record" in result.output
    assert out.read_text() == "mine"

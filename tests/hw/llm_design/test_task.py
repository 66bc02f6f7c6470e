"""The task record, the port parser and VerilogEval's loader (no tools needed)."""

from __future__ import annotations

import shutil

import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.hw.llm_design.task import Port, parse_ports
from mfmaccel.hw.llm_design.verilog_eval import ENV_VAR, default_directory, load_verilog_eval
from tests.hw.llm_design.conftest import EXCERPT


def test_ports_inherit_direction_and_range():
    source = """// a header with comments
    module RefModule #(parameter W = 4) (
      input clk, input [7:0] a, b, // two bytes
      output reg [3:1] ena,
      output logic [W-1:0] y,
      output [1:0][3:0] packed2
    );
    endmodule"""
    assert parse_ports(source, "RefModule") == [
        Port("clk", "input", 1), Port("a", "input", 8, "[7:0]"), Port("b", "input", 8, "[7:0]"),
        Port("ena", "output", 3, "[3:1]"), Port("y", "output", None, "[W-1:0]"),
        Port("packed2", "output", 8, "[1:0][3:0]")]


def test_ports_refuse_a_missing_module_or_a_non_ansi_header():
    with pytest.raises(ValueError, match="no 'module RefModule'"):
        parse_ports("module Other(input a); endmodule", "RefModule")
    with pytest.raises(ValueError, match="no direction"):
        parse_ports("module RefModule(a, b); input a; output b; endmodule", "RefModule")


def test_excerpt_loads_with_spec_ports_and_bench(excerpt_tasks):
    assert sorted(excerpt_tasks) == ["Prob004", "Prob034", "Prob099"]
    task = excerpt_tasks["Prob034"]
    assert task.source == "verilog-eval-v2" and task.name == "Prob034_dff8"
    assert "TopModule" in task.spec and "module RefModule" in task.reference
    assert [(p.name, p.direction, p.width) for p in task.ports] == [
        ("clk", "input", 1), ("d", "input", 8), ("q", "output", 8)]
    assert task.to_dict()["ports"][1] == {"name": "d", "direction": "input", "width": 8,
                                          "range": "[7:0]"}


def test_names_select_by_full_name_or_prefix():
    tasks = load_verilog_eval(EXCERPT, names=["Prob099", "Prob004_vector2"], complete=False)
    assert [t.name for t in tasks] == ["Prob099_m2014_q6c", "Prob004_vector2"]
    with pytest.raises(UserInputError, match="unknown VerilogEval problem 'Prob777'"):
        load_verilog_eval(EXCERPT, names=["Prob777"], complete=False)


def test_missing_incomplete_or_corrupt_folders_are_refused_in_one_line(tmp_path):
    with pytest.raises(UserInputError, match=f"no VerilogEval v2 data.*{ENV_VAR}"):
        load_verilog_eval(tmp_path / "nowhere")
    with pytest.raises(UserInputError, match="has 3 prompts, not 156"):
        load_verilog_eval(EXCERPT)
    copy = tmp_path / "copy"
    shutil.copytree(EXCERPT, copy)
    bench = copy / "dataset_spec-to-rtl" / "Prob004_vector2_test.sv"
    bench.write_text(bench.read_text().replace("Mismatches:", "Errors:"))
    with pytest.raises(UserInputError, match="report line.*damaged") as caught:
        load_verilog_eval(copy, complete=False)
    assert "\n" not in str(caught.value)
    (copy / "dataset_spec-to-rtl" / "Prob034_dff8_ref.sv").unlink()
    with pytest.raises(UserInputError, match="cannot read .*Prob034_dff8_ref.sv"):
        load_verilog_eval(copy, names=["Prob034"], complete=False)


def test_default_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert default_directory() == tmp_path
    monkeypatch.delenv(ENV_VAR)
    assert default_directory().parts[-3:] == ("shared", "data", "verilog-eval-v2")

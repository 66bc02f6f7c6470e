"""verilator lint and yosys synthesis of candidates, in the sandbox; and the reference check."""

from __future__ import annotations

from mfmaccel.hw.llm_design.references import check_references
from mfmaccel.hw.llm_design.tools import CLEAN, ERRORS, REFUSED, WARNINGS, lint, synthesize
from tests.hw.llm_design.conftest import needs_icarus, needs_verilator, needs_yosys

ADDER = """module sub(input [7:0] a, b, output [7:0] s);
  assign s = a + b;
endmodule
module TopModule(input clk, input [7:0] a, b, output reg [7:0] q);
  wire [7:0] s;
  sub u(.a(a), .b(b), .s(s));
  always @(posedge clk) q <= s + 8'd1;
endmodule
"""


@needs_verilator
def test_lint_clean_warnings_errors_and_refusal():
    assert lint(ADDER).status == CLEAN
    narrow = lint("module TopModule(input [7:0] a, output [3:0] q);\n"
                  "  assign q = a;\nendmodule\n")
    assert narrow.status == WARNINGS and narrow.warnings == 1
    assert narrow.messages[0].startswith("%Warning-WIDTH: TopModule.sv:2")
    broken = lint("module TopModule(input a, output q);\n  assign q = a +;\nendmodule\n")
    assert broken.status == ERRORS and broken.messages[0].startswith("%Error: TopModule.sv:2")
    unused = lint("module TopModule(input a, input b, output q);\n  assign q = a;\nendmodule\n")
    assert unused.status == CLEAN  # VerilogEval specs name inputs a design may ignore
    refused = lint("module TopModule(output q);\n  initial $finish;\nendmodule\n")
    assert refused.status == REFUSED and refused.messages[0].startswith("refused: uses $finish")


@needs_yosys
def test_synthesis_counts_cells_through_the_hierarchy():
    report = synthesize(ADDER)
    assert report.ok and report.cells > 8 and report.transistors > 0
    broken = synthesize("module TopModule(input a, output q);\n  assign q = a +;\nendmodule\n")
    assert broken.status == "errors" and "syntax error" in broken.detail
    reader = synthesize("module TopModule(input [1:0] a, output [7:0] q);\n  reg [7:0] m [0:3];\n"
                        "  initial $readmemh(0, m);\n  assign q = m[a];\nendmodule\n")
    assert reader.status == REFUSED and "$readmemh" in reader.detail


@needs_icarus
def test_reference_check_names_the_reference_that_fails(excerpt_tasks):
    checks = check_references(excerpt_tasks.values())
    assert [(c.task, c.passed) for c in checks] == [
        ("Prob004_vector2", True), ("Prob034_dff8", True), ("Prob099_m2014_q6c", False)]
    assert checks[2].status == "compile_error" and "Y2" in checks[2].detail
    assert checks[0].samples == 110

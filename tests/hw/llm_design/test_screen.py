"""What `screen` lets through to the tools, and what it refuses (no tools needed)."""

from __future__ import annotations

import pytest

from mfmaccel.hw.llm_design.bench import instrument, read_hints, read_report, untokened
from mfmaccel.hw.llm_design.screen import screen

GOOD = """// reverse the bytes; $display in a comment is fine
module TopModule(input [31:0] in, output [31:0] out);
  localparam W = $clog2(32); /* $finish here too */
  assign out = {in[7:0], in[15:8], in[23:16], in[31:24]};
endmodule"""


def test_a_plain_design_with_pure_functions_and_comments_passes():
    assert screen(GOOD) == ""


@pytest.mark.parametrize("line, named", [
    ('initial $display("Mismatches: 0 in 110 samples");', "$display"),
    ("initial #5 $finish;", "$finish"),
    ("initial $stop;", "$stop"),
    ("initial $fatal(1);", "$fatal"),
    ("integer f; initial f = $fopen(0);", "$fopen"),
    ("reg [7:0] m [0:3]; initial $readmemh(0, m);", "$readmemh"),
    ("integer v; initial v = $test$plusargs(0);", "$test$plusargs"),
    ("initial $dumpvars;", "$dumpvars"),
    ("integer r; initial r = $random;", "$random"),
    ("initial $system(0);", "$system"),
    ("`include 0", "`include"),
    ("wire w; assign w = `MACRO``$finish;", "$finish"),
])
def test_system_tasks_includes_are_refused_by_name(line, named):
    source = GOOD.replace("endmodule", line + "\nendmodule")
    assert screen(source).startswith(f"refused: uses {named}")


def test_strings_are_refused_so_comments_cannot_hide_code():
    # a reader that took "//" for a comment would miss the $finish after it: the quote is refused
    tricky = GOOD.replace("endmodule", 'localparam S = "a//"; initial $finish;\nendmodule')
    assert screen(tricky).startswith("refused: uses a string literal")
    quoted = GOOD.replace("endmodule", 'localparam S = "idle";\nendmodule')
    assert screen(quoted).startswith("refused: uses a string literal")


def test_an_answer_without_topmodule_is_refused():
    assert screen(GOOD.replace("TopModule", "Top")) == "no module TopModule in the answer"
    assert screen("// module TopModule\nmodule X; endmodule") == "no module TopModule in the answer"


def test_instrument_tokens_the_report_line_and_every_bench_name(vector2):
    bench = instrument(vector2, token="feedc0de")
    assert bench.top == "tb_feedc0de"
    assert '$display("feedc0de Mismatches: %1d in %1d samples", stats1_feedc0de.errors' \
        in bench.testbench
    for name in ("module tb_feedc0de", "module stimulus_gen_feedc0de", "RefModule_feedc0de good1_"
                 "feedc0de", "TopModule top_module1_feedc0de"):
        assert name in bench.testbench
    assert "$dump" not in bench.testbench
    assert "module RefModule_feedc0de" in bench.reference
    assert untokened("tb_feedc0de.top_module1_feedc0de", "feedc0de") == "tb.top_module1"


def test_only_the_line_carrying_the_token_is_read():
    output = ("Mismatches: 0 in 110 samples\n00ff Mismatches: 0 in 110 samples\n"
              "Hint: Output 'out' has 3 mismatches. First mismatch occurred at time 20.\n"
              "Hint: Output 'q' has 0 mismatches. First mismatch occurred at time 0.\n"
              "feedc0de Mismatches: 3 in 110 samples\n")
    assert read_report(output, "feedc0de") == (3, 110)
    assert read_report(output, "abcd") is None
    assert read_hints(output) == ["out: 3 mismatches, the first at time 20"]

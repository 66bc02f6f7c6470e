"""The security check: planted trojans that pass the random-stimulus bench are caught, clean
rewrites pass; refusals, yosys errors and time limits are verdicts, not exceptions."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mfmaccel.evaluate.sandbox import SandboxLimits
from mfmaccel.hw.llm_design.bench import reference_as_candidate
from mfmaccel.hw.llm_design.contamination import near_copy, overlap, tokens
from mfmaccel.hw.llm_design.cwe_lint import cwe_lint, literal_values, port_findings
from mfmaccel.hw.llm_design.equivalence import check_equivalence, counterexample
from mfmaccel.hw.llm_design.security import security_check
from mfmaccel.hw.llm_design.simulate import simulate
from mfmaccel.hw.llm_design.task import DesignTask, Port, parse_ports
from tests.hw.llm_design.conftest import needs_icarus, needs_yosys

SWAP = "{in[7:0], in[15:8], in[23:16], in[31:24]}"
VECTOR2 = "module TopModule(input [31:0] in, output [31:0] out);\n{body}\nendmodule\n"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "trojans"


def read_design(path: Path) -> tuple[str, str]:
    """(task, design) of a fixture: its first line names the task (`// task: Prob004`), its
    second says what it does; the design is the text after those two lines."""
    task_line, description, design = path.read_text().split("\n", 2)
    assert task_line.startswith("// task: ") and description.startswith("// "), path
    return task_line.removeprefix("// task: ").strip(), design


# Each passes Prob004's or Prob034's bench; what catches it (the fixture file says the payload)
CAUGHT_BY = {
    "magic_32bit_input": ("not_equivalent", "rare_trigger"),
    "magic_16bit_localparam": ("not_equivalent", "rare_trigger"),
    "magic_hidden_in_xor": ("not_equivalent",),  # no compare: only the proof
    "counter_reaching_ffff": ("rare_trigger",),  # past the bound
    "debug_port": ("not_equivalent", "debug_port"),
    "simulator_only_branch": ("tool_conditional",),  # yosys proves the clean one
    "armed_by_a_sequence": ("not_equivalent", "rare_trigger"),
}
TROJANS = {path.stem: (*read_design(path), CAUGHT_BY.get(path.stem, ()))
           for path in sorted(FIXTURES.glob("*.sv"))}
CLEAN = {path.stem: read_design(path) for path in sorted((FIXTURES / "clean").glob("*.sv"))}


def test_every_trojan_fixture_says_what_catches_it():
    assert set(TROJANS) == set(CAUGHT_BY) and len(CLEAN) == 3


def tiny_task(reference: str) -> DesignTask:
    """A task for the security check alone (it reads no bench)."""
    return DesignTask("tiny", "spec", parse_ports(reference, "RefModule"), reference, "",
                      "mfmaccel")


@needs_icarus
@needs_yosys
@pytest.mark.parametrize("name", CAUGHT_BY)
def test_every_trojan_passes_the_bench_and_is_caught(name, excerpt_tasks):
    problem, candidate, caught_by = TROJANS[name]
    task = excerpt_tasks[problem]
    assert simulate(candidate, task).passed  # the random bench does not see it
    report = security_check(candidate, task)
    assert report.status == "findings" and not report.secure, report
    kinds = {finding.kind for finding in report.findings}
    assert {"not_equivalent"} & set(caught_by) <= {report.equivalence.status}
    assert set(caught_by) - {"not_equivalent"} <= kinds, report.findings


@needs_yosys
def test_the_proof_names_the_magic_input_and_the_sequence(excerpt_tasks):
    magic = check_equivalence(TROJANS["magic_32bit_input"][1], excerpt_tasks["Prob004"])
    assert magic.counterexample == ["1: in=32'hdeadbeef"] and magic.clocking == "none"
    armed = check_equivalence(TROJANS["armed_by_a_sequence"][1], excerpt_tasks["Prob034"])
    assert armed.status == "not_equivalent" and armed.clocking == "single"
    assert any("d=8'h5a" in line for line in armed.counterexample)
    counter = check_equivalence(TROJANS["counter_reaching_ffff"][1], excerpt_tasks["Prob034"])
    assert (counter.status, counter.proof, counter.steps) == ("equivalent", "bounded", 20)


@needs_icarus
@needs_yosys
@pytest.mark.parametrize("name", CLEAN)
def test_clean_rewrites_pass(name, excerpt_tasks):
    problem, candidate = CLEAN[name]
    task = excerpt_tasks[problem]
    assert simulate(candidate, task).passed
    report = security_check(candidate, task)
    assert report.secure and report.findings == [], report
    assert report.equivalence.proof in ("combinational", "induction", "bounded")


@needs_yosys
def test_references_against_themselves_are_proven(excerpt_tasks):
    for name, proof in (("Prob004", "combinational"), ("Prob034", "induction")):
        task = excerpt_tasks[name]
        report = security_check(reference_as_candidate(task), task)
        assert report.secure and report.equivalence.proof == proof
        assert report.overlap == 1.0


@needs_yosys
def test_two_clock_edges_are_modelled_exactly():
    reference = ("module RefModule(input clk, input d, output q);\n  reg p, n;\n"
                 "  always @(posedge clk) p <= d;\n  always @(negedge clk) n <= d;\n"
                 "  assign q = clk ? p : n;\nendmodule\n")
    task = tiny_task(reference)
    same = check_equivalence(reference.replace("RefModule", "TopModule"), task)
    assert same.status == "equivalent" and same.clocking == "clk2fflogic"
    posedge_only = ("module TopModule(input clk, input d, output reg q);\n"
                    "  always @(posedge clk) q <= d;\nendmodule\n")
    assert check_equivalence(posedge_only, task).status == "not_equivalent"


@needs_yosys
def test_lint_names_latches_and_implicit_nets():
    task = tiny_task("module RefModule(input en, input [3:0] a, output [3:0] y);\n"
                     "  assign y = a;\nendmodule\n")
    latch = ("module TopModule(input en, input [3:0] a, output reg [3:0] y);\n"
             "  always @(*) if (en) y = a;\nendmodule\n")
    implicit = ("module TopModule(input en, input [3:0] a, output [3:0] y);\n"
                "  assign t = en;\n  assign y = a;\nendmodule\n")
    comb_latch = ("module TopModule(input en, input [3:0] a, output reg [3:0] y);\n"
                  "  always_comb case (a) 4'd0: y = 4'd0; 4'd1: y = 4'd1; endcase\n"
                  "endmodule\n")
    assert [(f.kind, f.line.split()[0]) for f in cwe_lint(latch, task).findings] == [
        ("latch", "y")]
    assert [(f.kind, f.line.split()[0]) for f in cwe_lint(implicit, task).findings] == [
        ("implicit_net", "t")]
    found = cwe_lint(comb_latch, task)
    assert [(f.kind, f.line.split()[0]) for f in found.findings] == [("latch", "y")]
    assert "always_comb" in found.findings[0].line
    # yosys refuses that always_comb; the proof reads it again with the latch as x
    assert check_equivalence(comb_latch, task).status == "not_equivalent"


def test_port_findings_name_extra_missing_and_changed_ports():
    spec = [Port("clk", "input", 1), Port("d", "input", 8), Port("q", "output", 8)]
    found = port_findings([Port("clk", "input", 1), Port("d", "output", 8),
                           Port("dbg", "output", 8)], spec)
    assert [(f.kind, f.line) for f in found] == [
        ("debug_port", "output dbg (8 bits) is not in the spec"),
        ("port_mismatch", "d is output (8 bits); the spec has input (8 bits)"),
        ("port_mismatch", "spec port output q is missing")]
    assert literal_values("x == 8'hA5 || y == 12 /* 99 */ || z == 4'b10_01 || w == 'x") == {
        0xA5, 12, 9}


@needs_yosys
def test_a_refused_candidate_is_refused_by_every_check(vector2):
    evil = VECTOR2.format(body=f"  assign out = {SWAP};\n  initial $display(1);")
    report = security_check(evil, vector2)
    assert report.status == "refused" and report.equivalence.status == "refused"
    assert "$display" in report.detail
    assert check_equivalence(evil, vector2).status == "refused"
    assert cwe_lint(evil, vector2).status == "refused"


@needs_yosys
def test_yosys_errors_are_reported_not_raised(vector2):
    broken = VECTOR2.format(body="  assign out = in +;")
    report = security_check(broken, vector2)
    assert report.status == "unknown" and report.lint_status == "unknown"
    assert report.equivalence.detail.startswith("yosys cannot read the candidate")
    bad_reference = tiny_task("module RefModule(input a, output b);\n  assign b = a;\nendmodule\n")
    bad_reference.reference = bad_reference.reference.replace("a;", "a +;")
    found = check_equivalence("module TopModule(input a, output b);\n  assign b = a;\n"
                              "endmodule\n", bad_reference)
    assert found.status == "unknown" and "the reference" in found.detail
    missing = check_equivalence("module TopModule(input a);\nendmodule\n", tiny_task(
        "module RefModule(input a, output b);\n  assign b = a;\nendmodule\n"))
    assert (missing.status, missing.detail) == (
        "not_equivalent", "interfaces differ: the candidate has no port b")


@needs_yosys
def test_a_hard_proof_ends_at_the_time_limit():
    """Multiplication written as shifts and adds against `*`: hard for SAT, so the proof is
    cut at the sandbox's limit and reported unknown within a bounded time."""
    task = tiny_task("module RefModule(input [15:0] a, input [15:0] b, output [31:0] y);\n"
                     "  assign y = a * b;\nendmodule\n")
    shift_add = ("module TopModule(input [15:0] a, input [15:0] b, output reg [31:0] y);\n"
                 "  integer i;\n  always @(*) begin\n    y = 0;\n"
                 "    for (i = 0; i < 16; i = i + 1) if (b[i]) y = y + ({16'b0, a} << i);\n"
                 "  end\nendmodule\n")
    limits = SandboxLimits(wall_seconds=4.0, cpu_seconds=4, memory_bytes=2 << 30,
                           file_bytes=8 << 20, max_processes=32, max_output_bytes=64 * 1024,
                           dir_bytes=64 << 20)
    start = time.perf_counter()
    report = check_equivalence(shift_add, task, limits=limits)
    assert report.status == "unknown" and "time limit" in report.detail, report
    assert time.perf_counter() - start < 3 * limits.wall_seconds


def test_overlap_is_one_for_the_reference_and_low_for_a_rewrite(vector2):
    assert overlap(reference_as_candidate(vector2), vector2) == (1.0, 47)
    share, count = overlap(CLEAN["byte_loop"][1], vector2)
    assert share < 0.2 and not near_copy(share, count)
    assert tokens("assign x = 8'h FF; // c\n/* d */ y <= a") == [
        "assign", "x", "=", "8'hFF", ";", "y", "<=", "a"]
    assert near_copy(0.9, 40) and not near_copy(0.9, 10) and not near_copy(0.5, 40)


def test_counterexample_reads_yosys_wavejson():
    sequential = ('{"signal": [{"name": "trigger", "wave": "40..1"},'
                  '{"name": "in_clk", "wave": "40..."},'
                  '{"name": "in_d", "wave": "4===.", "data": ["", "0101", "x1x0", "0000"]}]}')
    assert counterexample(sequential, 4, skip=("in_clk",)) == [
        "1: d=4'h5", "2: d=4'bx1x0", "3: d=4'h0", "4: d=4'h0"]
    assert counterexample('{"signal": [{"name": "in_a", "wave": "1"}]}', 1) == ["1: a=1"]
    assert counterexample("not json", 3) == []

"""The simulation verdict on tiny handwritten answers: right, wrong, broken, and hostile ones
(forgers, loops, floods, file writers) that must fail in bounded time with the host untouched.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from mfmaccel.evaluate.sandbox import SandboxLimits, sandbox_mode
from mfmaccel.hw.llm_design.bench import reference_as_candidate
from mfmaccel.hw.llm_design.simulate import (
    COMPILE_ERROR,
    MISMATCH,
    NO_REFERENCE,
    OUTPUT_FLOOD,
    PASS,
    REFUSED,
    RUNTIME_FAILURE,
    TIMEOUT,
    reference_run,
    simulate,
)
from tests.hw.llm_design.conftest import needs_icarus

pytestmark = needs_icarus
NAMESPACED = sandbox_mode() in ("namespace", "userns")
SHORT = SandboxLimits(wall_seconds=6.0, cpu_seconds=6, file_bytes=1 << 20)
HEADER = "module TopModule(input [31:0] in, output [31:0] out);\n"
RIGHT = HEADER + "  assign out = {in[7:0], in[15:8], in[23:16], in[31:24]};\nendmodule\n"
WRONG = HEADER + "  assign out = {in[15:8], in[7:0], in[23:16], in[31:24]};\nendmodule\n"


def with_body(extra: str, base: str = RIGHT) -> str:
    return base.replace("endmodule", extra + "\nendmodule")


def test_the_reference_passes_and_sets_the_sample_count(vector2):
    verdict = reference_run(vector2)
    assert verdict.status == PASS and verdict.mismatches == 0 and verdict.samples == 110


def test_a_right_answer_passes(vector2, excerpt_tasks):
    verdict = simulate(RIGHT, vector2)
    assert verdict.passed and verdict.samples == verdict.expected_samples == 110
    dff = excerpt_tasks["Prob034"]
    answer = ("module TopModule(input clk, input [7:0] d, output reg [7:0] q);\n"
              "  initial q = 0;\n  always @(posedge clk) q <= d;\nendmodule\n")
    assert simulate(answer, dff).passed


def test_a_wrong_answer_mismatches_with_the_first_mismatching_output(vector2):
    verdict = simulate(WRONG, vector2)
    assert verdict.status == MISMATCH and verdict.mismatches > 0
    assert verdict.detail == f"{verdict.mismatches} of 110 samples mismatch"
    assert verdict.lines and verdict.lines[0].startswith("out: ")
    assert "the first at time" in verdict.lines[0]
    # then the first mismatching samples: the input and both outputs, as Verilog literals
    samples = [line for line in verdict.lines if line.startswith("sample at time")]
    assert len(samples) == 2
    found = re.search(r"inputs in=32'h([0-9a-f]{8}); out expected 32'h([0-9a-f]{8}), "
                      r"got 32'h([0-9a-f]{8})", samples[0])
    assert found, samples[0]
    word = bytes.fromhex(found.group(1))
    assert found.group(2) == word[::-1].hex()
    assert found.group(3) == (word[2:3] + word[3:4] + word[1:2] + word[0:1]).hex()


def test_a_broken_answer_is_a_compile_error_in_a_few_lines(vector2):
    verdict = simulate(HEADER + "  assign out = in + ;\nendmodule\n", vector2)
    assert verdict.status == COMPILE_ERROR
    assert verdict.detail.startswith("TopModule.sv:2:") and 1 <= len(verdict.lines) <= 5


def test_an_answer_without_topmodule_is_refused(vector2):
    verdict = simulate(RIGHT.replace("TopModule", "Top"), vector2)
    assert verdict.status == REFUSED and verdict.detail == "no module TopModule in the answer"


def test_a_task_whose_reference_fails_its_bench_is_no_reference(excerpt_tasks):
    verdict = simulate(reference_as_candidate(excerpt_tasks["Prob099"]), excerpt_tasks["Prob099"])
    assert verdict.status == NO_REFERENCE and "Y2" in verdict.detail


# --- forgers: each fails with the screen, and still fails with the screen switched off


PRINTER = with_body('  initial #10000 $display("Mismatches: 0 in 110 samples");', WRONG)
EARLY_FINISH = with_body("  initial #30 $finish;", WRONG)


def test_printing_the_pass_line_is_refused_and_would_not_pass(vector2):
    assert simulate(PRINTER, vector2).detail.startswith("refused: uses $display")
    verdict = simulate(PRINTER, vector2, screen_first=False)
    assert verdict.status == MISMATCH and verdict.mismatches > 0


def test_ending_the_run_early_is_refused_and_would_not_pass(vector2):
    assert simulate(EARLY_FINISH, vector2).detail.startswith("refused: uses $finish")
    verdict = simulate(EARLY_FINISH, vector2, screen_first=False)
    assert verdict.status == RUNTIME_FAILURE and verdict.samples < 110
    assert "the reference runs 110" in verdict.detail


def test_reaching_into_the_bench_by_name_does_not_compile(vector2):
    # against the original names this compiles and zeroes the bench's error count
    forger = with_body("  always @(posedge tb.clk or negedge tb.clk) #1 tb.stats1.errors = 0;",
                       WRONG)
    verdict = simulate(forger, vector2)
    assert verdict.status == COMPILE_ERROR and "tb.stats1.errors" in verdict.detail
    assert not re.search(r"[0-9a-f]{16}", " ".join(verdict.lines))  # the run's token not shown


def test_replacing_the_reference_module_does_not_change_the_judge(vector2):
    forger = WRONG + WRONG.replace("TopModule", "RefModule")
    assert simulate(forger, vector2).status == MISMATCH


# --- bounded failures: loops, floods, file writers


@pytest.mark.parametrize("loop", [
    "  reg x = 0;\n  initial forever #0 x = ~x;",  # zero-delay loop
    "  wire a, c;\n  assign a = in[0] ? ~c : 1'b0;\n  assign c = a;",  # combinational loop
])
def test_a_design_that_never_settles_times_out_in_bounded_time(vector2, loop):
    started = time.monotonic()
    verdict = simulate(with_body(loop), vector2, limits=SHORT, expected_samples=110)
    assert verdict.status == TIMEOUT
    assert time.monotonic() - started < SHORT.wall_seconds + 5


def test_a_flood_is_refused_and_bounded_without_the_screen(vector2):
    flood = with_body('  initial repeat (1000000) $display("%0d spam spam spam spam", in);')
    assert simulate(flood, vector2).status == REFUSED
    started = time.monotonic()
    verdict = simulate(flood, vector2, limits=SHORT, expected_samples=110, screen_first=False)
    assert verdict.status == OUTPUT_FLOOD
    assert time.monotonic() - started < SHORT.wall_seconds + 5


@pytest.mark.skipif(not NAMESPACED, reason="needs namespaces for a read-only filesystem")
def test_a_file_writer_is_refused_and_cannot_write_outside_its_folder(vector2, tmp_path):
    target = tmp_path / "escaped.txt"
    os.chmod(tmp_path, 0o777)  # even a folder anyone may write stays untouched
    writer = with_body(f'  integer f;\n  initial begin f = $fopen("{target}", "w"); '
                       '$fdisplay(f, "owned"); $fclose(f); end')
    assert simulate(writer, vector2).detail.startswith("refused: uses $fopen")
    verdict = simulate(writer, vector2, limits=SHORT, screen_first=False)
    assert verdict.status == PASS  # the design itself is right; its write went nowhere
    assert not target.exists() and os.listdir(tmp_path) == []


def test_a_file_flood_inside_its_folder_is_bounded(vector2):
    writer = with_body('  integer f;\n  initial begin f = $fopen("big.txt", "w"); '
                       'repeat (1000000) $fdisplay(f, "%0d filling the disk, line by line", in); '
                       "end")
    verdict = simulate(writer, vector2, limits=SHORT, expected_samples=110, screen_first=False)
    assert verdict.status == OUTPUT_FLOOD  # vvp killed at the file-size limit (SIGXFSZ)

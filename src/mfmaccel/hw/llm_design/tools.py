"""Lint (verilator) and synthesis (yosys) of a candidate, both in the sandbox.

Why sandboxed: the parsers read what a model wrote (`include, $readmemh at synthesis), so they
get the same fences and limits as a simulation, and the same `screen` first. What comes back is
short on purpose: the first few messages are the loop's feedback, the cell count and area
estimate its cost.
"""

from __future__ import annotations

import dataclasses
import re

from mfmaccel.evaluate.sandbox import SandboxLimits
from mfmaccel.hw.llm_design.bench import CANDIDATE_FILE
from mfmaccel.hw.llm_design.sandboxed import run_tools, tool_path
from mfmaccel.hw.llm_design.screen import TOP, screen
from mfmaccel.records import Record

CLEAN, WARNINGS, ERRORS, REFUSED, TIMEOUT, FAILED = (
    "clean", "warnings", "errors", "refused", "timeout", "failed")
# VerilogEval's specs name inputs a design may ignore (and the file is not named after the
# module's file convention), so these are by design, not defects.
LINT_WAIVERS = ("DECLFILENAME", "EOFNEWLINE", "UNUSEDSIGNAL", "UNUSEDPARAM")
MAX_MESSAGES = 5
STAT_FILE = "stat.txt"
DEFAULT_LIMITS = SandboxLimits(wall_seconds=60.0, cpu_seconds=60, memory_bytes=2 << 30,
                               file_bytes=8 << 20, max_processes=32,
                               max_output_bytes=64 * 1024, dir_bytes=64 << 20)
# Synthesis of a datapath unit (eight 47-bit dividers, an 8 x 8 multiplier array) needs more
# memory and writes a longer log than a lint: measured, yosys aborts at 2 GiB on our softmax.
SYNTHESIS_LIMITS = SandboxLimits(wall_seconds=300.0, cpu_seconds=300, memory_bytes=6 << 30,
                                 file_bytes=64 << 20, max_processes=32,
                                 max_output_bytes=64 * 1024, dir_bytes=256 << 20)


@dataclasses.dataclass
class LintReport(Record):
    """`status`: clean, warnings (compiles, but verilator objects), errors, refused, timeout or
    failed (the tool stopped without saying why); `messages`: the first few, one line each."""

    status: str
    messages: list[str] = dataclasses.field(default_factory=list)
    warnings: int = 0
    errors: int = 0
    seconds: float = 0.0


@dataclasses.dataclass
class SynthesisReport(Record):
    """yosys's generic synthesis of TopModule: `cells` after `synth`, `transistors` from
    `stat -tech cmos` (an area estimate), or `status` and `detail` saying why not."""

    status: str
    cells: int | None = None
    transistors: int | None = None
    transistors_partial: bool = False  # yosys's "+": some cells (flip-flops) not priced
    detail: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def lint(candidate: str, *, limits: SandboxLimits | None = None,
         waivers: tuple[str, ...] = LINT_WAIVERS) -> LintReport:
    """`verilator --lint-only -Wall` on the candidate, TopModule as top."""
    if refusal := screen(candidate):
        return LintReport(REFUSED, [refusal])
    argv = [tool_path("verilator"), "--lint-only", "-Wall", *(f"-Wno-{w}" for w in waivers),
            "--top-module", TOP, CANDIDATE_FILE]
    run = run_tools({CANDIDATE_FILE: candidate}, [argv], limits or DEFAULT_LIMITS)
    if not run.steps or run.steps[0].timed_out:
        why = run.sandbox_detail or "verilator passed its time limit"
        return LintReport(TIMEOUT if run.sandbox_status in ("timeout", "passed") else FAILED,
                          [why], seconds=run.seconds)
    step = run.steps[0]
    lines = [line.strip() for line in re.findall(r"^%(?:Warning|Error)[^\n]*", step.text, re.M)
             if not line.startswith("%Error: Exiting due to")]
    errors = sum(line.startswith("%Error") for line in lines)
    warnings = len(lines) - errors
    status = ERRORS if errors else WARNINGS if warnings else CLEAN
    if step.returncode != 0 and not lines:
        status, lines = FAILED, [f"verilator exited with status {step.returncode}: "
                                 f"{_last_line(step.text)}"]
    return LintReport(status, lines[:MAX_MESSAGES], warnings, errors, run.seconds)


def synthesize(candidate: str, *, limits: SandboxLimits | None = None) -> SynthesisReport:
    """Cells and a transistor-count area estimate of TopModule after `synth`."""
    if refusal := screen(candidate):
        return SynthesisReport(REFUSED, detail=refusal)
    script = (f"read_verilog -sv {CANDIDATE_FILE}; synth -top {TOP}; "
              f"tee -q -o {STAT_FILE} stat -tech cmos")
    steps = [[tool_path("yosys"), "-q", "-p", script], [tool_path("cat"), STAT_FILE]]
    run = run_tools({CANDIDATE_FILE: candidate}, steps, limits or SYNTHESIS_LIMITS)
    if not run.steps or run.steps[-1].timed_out:
        why = run.sandbox_detail or "yosys passed its time limit"
        return SynthesisReport(TIMEOUT if run.sandbox_status in ("timeout", "passed") else FAILED,
                               detail=why, seconds=run.seconds)
    if len(run.steps) < 2 or run.steps[1].returncode != 0:
        synthesis = run.steps[0]
        errors = [line.strip() for line in synthesis.text.splitlines() if "ERROR" in line]
        why = errors[0] if errors else f"yosys exited with status {synthesis.returncode}"
        return SynthesisReport(ERRORS, detail=why[:300], seconds=run.seconds)
    stat = run.steps[1].text
    cells = re.findall(r"Number of cells:\s+(\d+)", stat)
    transistors = re.findall(r"Estimated number of transistors:\s+(\d+)(\+?)", stat)
    if not cells:
        return SynthesisReport(FAILED, detail="yosys printed no cell count", seconds=run.seconds)
    count, partial = transistors[-1] if transistors else (None, "")
    return SynthesisReport("ok", int(cells[-1]), None if count is None else int(count),
                           bool(partial), seconds=run.seconds)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""

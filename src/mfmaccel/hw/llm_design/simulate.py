"""Simulating a candidate against a task's reference, in the sandbox, with a verdict that the
candidate cannot forge.

Why: the loop's only ground truth is this verdict, and the thing judged is untrusted code.
Three fences stand between a design and a false pass: `screen` refuses system tasks, file
reads and strings before any tool runs; `bench.instrument` puts a fresh token in the bench's
report line and names, so a design can neither print the line nor reach the bench's counters;
and a pass needs the token's line with zero mismatches over exactly the samples the reference
alone runs (an early end shows as too few). Everything runs under `run_tools`' limits, so a
design that loops, floods or writes is a recorded failure in bounded time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import signal

from mfmaccel.evaluate.sandbox import SandboxLimits
from mfmaccel.hw.llm_design.bench import (
    BENCH_FILE,
    CANDIDATE_FILE,
    REFERENCE_FILE,
    instrument,
    read_hints,
    read_report,
    reference_as_candidate,
    untokened,
)
from mfmaccel.hw.llm_design.sandboxed import StepResult, ToolRun, run_tools, tool_path
from mfmaccel.hw.llm_design.screen import screen
from mfmaccel.hw.llm_design.task import DesignTask
from mfmaccel.records import Record

PASS = "pass"
MISMATCH = "mismatch"
COMPILE_ERROR = "compile_error"
TIMEOUT = "timeout"
OUTPUT_FLOOD = "output_flood"
RUNTIME_FAILURE = "runtime_failure"
REFUSED = "refused"
NO_REFERENCE = "no_reference"  # the task's reference fails its own bench: nothing to judge by
SANDBOX_ERROR = "sandbox_error"
STATUSES = (PASS, MISMATCH, COMPILE_ERROR, TIMEOUT, OUTPUT_FLOOD, RUNTIME_FAILURE, REFUSED,
            NO_REFERENCE, SANDBOX_ERROR)
MAX_LINES = 5  # error or hint lines kept: feedback stays short

DEFAULT_LIMITS = SandboxLimits(wall_seconds=60.0, cpu_seconds=60, memory_bytes=1 << 30,
                               file_bytes=8 << 20, max_processes=32,
                               max_output_bytes=64 * 1024, dir_bytes=64 << 20)
IVERILOG_FLAGS = ("-g2012", "-Wall", "-Winfloop", "-Wno-timescale")


@dataclasses.dataclass
class Verdict(Record):
    """How one candidate fared; `status` is one of `STATUSES`, `detail` one line saying why.

    `lines` holds the first compile errors or the first mismatching outputs (signal, count,
    time of the first), as feedback for the next round.
    """

    task: str
    status: str
    detail: str = ""
    mismatches: int | None = None
    samples: int | None = None
    expected_samples: int | None = None
    lines: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == PASS


def simulate(candidate: str, task: DesignTask, *, limits: SandboxLimits | None = None,
             expected_samples: int | None = None, screen_first: bool = True) -> Verdict:
    """The verdict on `candidate` (Verilog defining module TopModule) for `task`.

    `expected_samples` is the count the reference alone runs; by default it is measured once
    per task (`reference_run`, cached). `screen_first=False` skips the refusal of system tasks:
    only for tests of the sandbox's own fences.
    """
    limits = limits or DEFAULT_LIMITS
    if screen_first and (refusal := screen(candidate)):
        return Verdict(task.name, REFUSED, refusal)
    if expected_samples is None:
        reference = reference_run(task, limits=limits)
        if not reference.passed:
            return Verdict(task.name, NO_REFERENCE, "the task's reference fails its own bench "
                           f"({reference.status}: {reference.detail})")
        expected_samples = reference.samples
    return run_bench(candidate, task, limits=limits, expected_samples=expected_samples)


_reference_runs: dict[str, Verdict] = {}


def reference_run(task: DesignTask, *, limits: SandboxLimits | None = None) -> Verdict:
    """The reference itself run as the candidate (its module renamed TopModule): it passes
    when its own bench reports zero mismatches; its `samples` is what a candidate must match.
    Cached per reference and bench text (a timeout is not cached)."""
    key = hashlib.sha256((task.reference + "\0" + task.testbench).encode()).hexdigest()
    if key not in _reference_runs:
        verdict = run_bench(reference_as_candidate(task), task, limits=limits or DEFAULT_LIMITS,
                            expected_samples=None)
        if verdict.status == TIMEOUT:
            return verdict
        _reference_runs[key] = verdict
    return dataclasses.replace(_reference_runs[key])


def run_bench(candidate: str, task: DesignTask, *, limits: SandboxLimits,
              expected_samples: int | None) -> Verdict:
    """Compile candidate, reference and instrumented bench with Icarus and simulate, in the
    sandbox; `expected_samples=None` accepts any sample count (the reference's own run)."""
    bench = instrument(task)
    files = {BENCH_FILE: bench.testbench, REFERENCE_FILE: bench.reference,
             CANDIDATE_FILE: candidate}
    steps = [[tool_path("iverilog"), *IVERILOG_FLAGS, "-s", bench.top, "-o", "sim.vvp",
              BENCH_FILE, REFERENCE_FILE, CANDIDATE_FILE],
             [tool_path("vvp"), "-n", "sim.vvp"]]
    run = run_tools(files, steps, limits)
    verdict = _judge(run, bench.token, limits=limits, expected_samples=expected_samples)
    verdict.task, verdict.seconds = task.name, run.seconds
    verdict.detail = untokened(verdict.detail, bench.token)
    verdict.lines = [untokened(line, bench.token) for line in verdict.lines]
    return verdict


def _judge(run: ToolRun, token: str, *, limits: SandboxLimits,
           expected_samples: int | None) -> Verdict:
    """The verdict read off the two steps (compile, simulate)."""
    if not run.steps:
        status = TIMEOUT if run.sandbox_status == "timeout" else SANDBOX_ERROR
        return Verdict("", status, run.sandbox_detail or f"sandbox: {run.sandbox_status}")
    compiled = run.steps[0]
    if compiled.timed_out:
        return Verdict("", TIMEOUT, f"compilation passed the {limits.wall_seconds:g} s limit")
    if compiled.returncode != 0:
        errors = compile_errors(compiled.text)
        return Verdict("", COMPILE_ERROR, errors[0] if errors else _last_line(compiled.text),
                       lines=errors)
    if len(run.steps) < 2:
        return Verdict("", SANDBOX_ERROR, run.sandbox_detail or "the simulation did not start")
    return _judge_simulation(run.steps[1], token, limits=limits,
                             expected_samples=expected_samples)


def _judge_simulation(step: StepResult, token: str, *, limits: SandboxLimits,
                      expected_samples: int | None) -> Verdict:
    if step.timed_out:
        return Verdict("", TIMEOUT, f"the simulation passed the {limits.wall_seconds:g} s "
                       "limit (a zero-delay loop or a combinational loop?)")
    if step.returncode == -signal.SIGXFSZ or step.size >= limits.file_bytes:
        return Verdict("", OUTPUT_FLOOD, f"the simulation wrote {limits.file_bytes} bytes or "
                       "more of output")
    report = read_report(step.text, token)
    if report is None:
        how = (f"killed by {signal.Signals(-step.returncode).name}"
               if step.returncode is not None and step.returncode < 0
               else f"exit status {step.returncode}")
        return Verdict("", RUNTIME_FAILURE, f"the simulation ended without the bench's report "
                       f"({how}): {_last_line(step.text)}")
    mismatches, samples = report
    verdict = Verdict("", PASS, "", mismatches, samples, expected_samples,
                      read_hints(step.text)[:MAX_LINES])
    if expected_samples is not None and samples != expected_samples:
        verdict.status = RUNTIME_FAILURE
        verdict.detail = (f"the bench ran {samples} samples, the reference runs "
                          f"{expected_samples} (the simulation ended early or late)")
    elif mismatches:
        verdict.status = MISMATCH
        verdict.detail = f"{mismatches} of {samples} samples mismatch"
    return verdict


def compile_errors(log: str) -> list[str]:
    """The first few error lines of an Icarus log, without the closing count."""
    lines = [line.strip() for line in log.splitlines()
             if re.search(r"\b(error|sorry|syntax)\b", line, re.I)
             and not re.match(r"\d+ error\(s\)", line.strip())]
    return lines[:MAX_LINES]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""

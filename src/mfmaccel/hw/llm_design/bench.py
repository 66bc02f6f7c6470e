"""A task's testbench and reference, rewritten for one run so that only the bench can pass.

Why: the pass line is plain text ("Mismatches: 0 in 110 samples"), and a design is compiled
beside the bench, so it could print that line, end the run before the bench counts, or reach
into the bench by hierarchical name (`tb.stats1.errors = 0` compiles and runs under Icarus).
Each run therefore gets a fresh random token: it prefixes the bench's report line, and it is
appended to every name a design could reach the bench through (the bench module, its stimulus
module, its instances and counters, the reference module and every name beginning with
the reference module's: its helpers). The design never sees the token,
so it can neither print the line nor name the bench; a pass needs the token's line with zero
mismatches and the sample count the reference alone runs. Waveform dumps are dropped: nothing
reads them, and they would count against the file-size limit.
"""

from __future__ import annotations

import dataclasses
import re
import secrets

from mfmaccel.hw.llm_design.task import DesignTask
from mfmaccel.hw.llm_design.verilog_eval import REPORT_LINE

BENCH_FILE, REFERENCE_FILE, CANDIDATE_FILE = "tb.sv", "ref.sv", "TopModule.sv"
# names inside VerilogEval's bench (and the reference module) that a design could refer to
_BENCH_NAMES = ("tb", "stimulus_gen", "stim1", "good1", "top_module1", "stats1", "stats")
_REPORT = re.compile(r"^([0-9a-f]+) Mismatches: (\d+) in (\d+) samples\s*$", re.M)
_FIRST_ERROR = "if (stats1.errors == 0) stats1.errortime = $time;"
SHOWN_SAMPLES = 2
_SAMPLE = re.compile(r"^Hint: Sample (.*)$", re.M)
MAX_SAMPLE_CHARS = 300
_HINT = re.compile(r"Hint: Output '([^']*)' has (\d+) mismatches\. First mismatch occurred "
                   r"at time (\d+)\.")


@dataclasses.dataclass(frozen=True)
class Bench:
    """The files of one run, its token and its top module's name."""

    token: str
    top: str
    testbench: str
    reference: str


def instrument(task: DesignTask, token: str | None = None) -> Bench:
    """The task's bench and reference with this run's token in the report line and names."""
    token = token or secrets.token_hex(8)
    suffix = f"_{token}"
    testbench = with_sample_lines(task)
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, _BENCH_NAMES)) + r")\b"
                         + rf"|\b({re.escape(task.reference_module)}\w*)")
    bench = pattern.sub(lambda m: (m.group(1) or m.group(2)) + suffix, testbench)
    bench = re.sub(r"\$dump\w*\s*\([^;]*\)\s*;", "", bench)
    report = REPORT_LINE.replace('"Mismatches:', f'"{token} Mismatches:')
    if bench.count(REPORT_LINE) != 1:
        raise ValueError(f"task {task.name}: its bench lacks the report line {REPORT_LINE}")
    bench = bench.replace(REPORT_LINE, report)
    reference = re.sub(rf"\b({re.escape(task.reference_module)}\w*)", rf"\g<1>{suffix}",
                       task.reference)
    return Bench(token, "tb" + suffix, bench, reference)


def with_sample_lines(task: DesignTask) -> str:
    """VerilogEval's bench made to print its first mismatching samples (the inputs, each
    output's expected and actual value), as our unit benches do: the counts alone tell a model
    which output is wrong, not on what input. Inserted where the bench counts a mismatching
    sample; a bench of another shape is returned as it is."""
    if task.source != "verilog-eval-v2" or task.testbench.count(_FIRST_ERROR) != 1:
        return task.testbench
    inputs = [p for p in task.ports if p.direction == "input" and p.name != "clk"]
    outputs = [p for p in task.ports if p.direction == "output"]
    given = " ".join(f"{p.name}={_format(p)}" for p in inputs) or "(none)"
    results = "; ".join(f"{p.name} expected {_format(p)}, got {_format(p)}" for p in outputs)
    arguments = [p.name for p in inputs]
    arguments += [name for p in outputs for name in (f"{p.name}_ref", f"{p.name}_dut")]
    display = (f'if (stats1.errors < {SHOWN_SAMPLES}) $display("Hint: Sample at time %0d: '
               f'inputs {given}; {results}", $time, {", ".join(arguments)});')
    return task.testbench.replace(_FIRST_ERROR, f"{_FIRST_ERROR}\n\t\t\t{display}")


def _format(port) -> str:
    """Verilog literals: bits for narrow ports (VerilogEval's logic problems), hex for wide
    ones (8'b00101100, 32'h12153524)."""
    if port.width == 1:
        return "%b"
    size = "" if port.width is None else str(port.width)
    return f"{size}'b%b" if port.width is not None and port.width <= 16 else f"{size}'h%h"


def reference_as_candidate(task: DesignTask) -> str:
    """The reference's text with its module renamed TopModule (and its helpers, named
    RefModule_<unit>, renamed TopModule_<unit>): the answer that must pass."""
    return re.sub(rf"\b{re.escape(task.reference_module)}", "TopModule", task.reference)


def read_report(output: str, token: str) -> tuple[int, int] | None:
    """(mismatches, samples) from the line carrying `token`, or None when none does."""
    for found in _REPORT.finditer(output):
        if found.group(1) == token:
            return int(found.group(2)), int(found.group(3))
    return None


def read_hints(output: str) -> list[str]:
    """The bench's per-output hints for outputs that mismatched ("out: 12 mismatches, the
    first at time 55"), then the first mismatching samples where the bench prints them (our
    unit benches: "sample at time 55: inputs ...; q expected 3, got 2")."""
    outputs = [f"{name}: {count} mismatches, the first at time {time}"
               for name, count, time in _HINT.findall(output) if int(count)]
    samples = [f"sample {line[:MAX_SAMPLE_CHARS]}" for line in _SAMPLE.findall(output)]
    return outputs + samples


def untokened(text: str, token: str) -> str:
    """Text with the run's token removed, so feedback names the bench as its author wrote it
    (and a later run's token is fresh anyway)."""
    return text.replace(f"_{token}", "").replace(f"{token} ", "")

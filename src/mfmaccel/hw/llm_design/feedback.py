"""Succinct feedback on a candidate, for the next round's prompt.

Why short: a small model's context is small and its attention to a long log is poor; AutoChip
and VerilogEval's own failure categories both find that the first compile errors, or which
outputs mismatch and from when, carry nearly all of what a retry can use. So the text names
the first few errors or mismatching outputs, never the whole log, and is capped in length.
"""

from __future__ import annotations

from mfmaccel.hw.llm_design.screen import TOP
from mfmaccel.hw.llm_design.simulate import (
    COMPILE_ERROR,
    MISMATCH,
    OUTPUT_FLOOD,
    REFUSED,
    RUNTIME_FAILURE,
    TIMEOUT,
    Verdict,
)
from mfmaccel.hw.llm_design.task import DesignTask, Port, parse_ports
from mfmaccel.hw.llm_design.tools import ERRORS, LintReport

NO_MODULE = "no_module"  # the reply defined no module TopModule: a recorded failure
MAX_CHARS = 1200
MAX_ITEMS = 3

_WHY = {
    TIMEOUT: "The simulation did not finish in time (a zero-delay or combinational loop?)",
    OUTPUT_FLOOD: "The simulation flooded its output",
    RUNTIME_FAILURE: "The simulation did not run to the end",
    REFUSED: "The design was refused before simulation",
}


def feedback_text(verdict: Verdict, lint_report: LintReport | None = None, *,
                  module: str = "", task: DesignTask | None = None,
                  max_chars: int = MAX_CHARS) -> str:
    """What the tools found, in a few lines: where the module's ports differ from the spec's
    interface (given `module` and `task`), then the first compile errors (with verilator's
    first errors when it has some), the mismatching outputs and when they first differ, or why
    the run did not finish; at most `max_chars` characters."""
    ports = interface_notes(module, task) if module and task is not None else []
    text = _verdict_feedback(verdict, lint_report)
    if ports:
        text = "The module's ports differ from the specification:\n" + "\n".join(
            f"- {note}" for note in ports[:MAX_ITEMS]) + "\n" + text
    return _capped(text, max_chars)


def _verdict_feedback(verdict: Verdict, lint_report: LintReport | None) -> str:
    if verdict.status == NO_MODULE:
        text = (f"Your answer contains no Verilog module named {TOP}; the interface in the "
                "specification must be implemented as module TopModule.")
    elif verdict.status == COMPILE_ERROR:
        text = _compile_feedback(verdict, lint_report)
    elif verdict.status == MISMATCH:
        text = _mismatch_feedback(verdict)
    else:
        why = _WHY.get(verdict.status, f"The run failed ({verdict.status})")
        text = f"{why}: {verdict.detail}" if verdict.detail else f"{why}."
    return text


def interface_notes(module: str, task: DesignTask) -> list[str]:
    """Where TopModule's header differs from the task's ports: a missing or extra port, a
    direction or a width. Small models often swap an output for an input, and the bench's
    compile error or all-mismatch count does not say so. Empty when the header cannot be read
    (a non-ANSI header, a syntax error: the compiler speaks to those)."""
    try:
        found = {p.name: p for p in parse_ports(module, TOP)}
    except ValueError:
        return []
    wanted = {p.name: p for p in task.ports}
    notes = [f"port '{name}' is missing ({_describe(port)} in the specification)"
             for name, port in wanted.items() if name not in found]
    notes += [f"port '{name}' is not in the specification" for name in found
              if name not in wanted]
    for name, port in wanted.items():
        if name in found and _describe(found[name]) != _describe(port):
            notes.append(f"port '{name}' is declared {_describe(found[name])}; the "
                         f"specification has {_describe(port)}")
    return notes


def _describe(port: Port) -> str:
    """'output (8 bits)'; the width left out where either side's range is not a number."""
    width = f" ({port.width} bit{'s' if port.width != 1 else ''})" if port.width else ""
    return f"{port.direction}{width}"


def _compile_feedback(verdict: Verdict, lint_report: LintReport | None) -> str:
    """Icarus's first errors; verilator's first errors too, as they often name the cause more
    plainly (an undeclared signal, a width)."""
    lines = verdict.lines[:MAX_ITEMS] or [verdict.detail]
    text = "The module does not compile. Icarus Verilog says:\n" + "\n".join(
        _short(line) for line in lines)
    if lint_report is not None and lint_report.status == ERRORS:
        errors = [m for m in lint_report.messages if m.startswith("%Error")][:MAX_ITEMS]
        text += "\nVerilator says:\n" + "\n".join(_short(m) for m in errors)
    return text


def _mismatch_feedback(verdict: Verdict) -> str:
    """The count, then the bench's per-output hints (which output, from what time)."""
    text = (f"The module compiles, but its outputs differ from the reference in "
            f"{verdict.mismatches} of {verdict.samples} test samples.")
    if verdict.lines:
        text += "\nMismatching outputs:\n" + "\n".join(f"- {line}"
                                                      for line in verdict.lines[:MAX_ITEMS])
    return text


def _short(line: str) -> str:
    """One log line without the sandbox's file prefixes, at most 200 characters."""
    return line.replace("./", "").strip()[:200]


def _capped(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 3].rstrip() + "..."

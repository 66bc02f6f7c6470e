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
                  max_chars: int = MAX_CHARS) -> str:
    """What the tools found, in a few lines: the first compile errors (with verilator's first
    errors when it has some), the mismatching outputs and when they first differ, or why the
    run did not finish; at most `max_chars` characters."""
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
    return _capped(text, max_chars)


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

"""The security check of a design that passed simulation: is it the reference's behaviour,
nothing more, and not the reference's text?

Why: generated Verilog is untrusted. A random bench of ~100 samples cannot see a payload that
waits for one input value in 2^16 or for a counter's 65,536th cycle, nor a debug port it never
connects. So every design the loop accepts is also checked three ways: `equivalence` (a SAT
proof against the reference: complete for combinational logic, bounded from power-up for
sequential logic), `cwe_lint` (ports not in the spec, latches, rare-trigger compares, implicit
nets) and `contamination` (how much of its text is the reference's, for the reader).

A design is `secure` when it is proven equivalent (bounded for sequential designs) and the lint
has no finding; the contamination figure never decides it. Statuses: `clean` (secure),
`findings` (a finding, or proven different), `unknown` (a tool could not decide: a time limit,
a construct yosys cannot read), `refused` (the screen).
"""

from __future__ import annotations

import dataclasses

from mfmaccel.evaluate.sandbox import SandboxLimits
from mfmaccel.hw.llm_design.contamination import near_copy, overlap
from mfmaccel.hw.llm_design.cwe_lint import Finding, LintFindings, cwe_lint
from mfmaccel.hw.llm_design.equivalence import (
    NOT_EQUIVALENT,
    EquivalenceReport,
    check_equivalence,
)
from mfmaccel.hw.llm_design.screen import screen
from mfmaccel.hw.llm_design.task import DesignTask
from mfmaccel.records import Record

CLEAN, FINDINGS, UNKNOWN, REFUSED = "clean", "findings", "unknown", "refused"


@dataclasses.dataclass
class SecurityReport(Record):
    """The check of one design: `status`, the `equivalence` verdict, the lint's `findings`
    (`lint_status` says whether the lint ran), the n-gram `overlap` with the reference and
    whether that makes it a `near_copy`."""

    status: str
    equivalence: EquivalenceReport
    findings: list[Finding] = dataclasses.field(default_factory=list)
    lint_status: str = ""
    overlap: float = 0.0
    ngrams: int = 0
    near_copy: bool = False
    detail: str = ""
    seconds: float = 0.0

    @property
    def secure(self) -> bool:
        return self.status == CLEAN


def security_check(candidate: str, task: DesignTask, *,
                   limits: SandboxLimits | None = None) -> SecurityReport:
    """Equivalence, lint and overlap of `candidate` (module TopModule) against `task`."""
    if refusal := screen(candidate):
        return SecurityReport(REFUSED, EquivalenceReport(REFUSED, detail=refusal),
                              lint_status=REFUSED, detail=refusal)
    equivalence = check_equivalence(candidate, task, limits=limits)
    lint = cwe_lint(candidate, task, limits=limits)
    share, count = overlap(candidate, task)
    status, detail = _verdict(equivalence, lint)
    return SecurityReport(status, equivalence, lint.findings, lint.status, round(share, 4),
                          count, near_copy(share, count), detail,
                          equivalence.seconds + lint.seconds)


def _verdict(equivalence: EquivalenceReport, lint: LintFindings) -> tuple[str, str]:
    """(status, one line): a difference or a finding outweighs an undecided tool."""
    if equivalence.status == NOT_EQUIVALENT or lint.findings:
        reasons = ([f"not equivalent: {equivalence.detail}"]
                   if equivalence.status == NOT_EQUIVALENT else [])
        reasons += [f"{finding.kind}: {finding.line}" for finding in lint.findings[:3]]
        return FINDINGS, "; ".join(reasons)
    if not equivalence.equivalent:
        return UNKNOWN, f"equivalence unknown: {equivalence.detail}"
    if lint.status != "clean":
        return UNKNOWN, f"lint {lint.status}: {lint.detail}"
    return CLEAN, ""

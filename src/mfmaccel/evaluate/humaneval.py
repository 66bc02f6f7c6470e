"""HumanEval-style functional correctness: run completions against tests, report pass@k.

Why: a compressed model's code is only as good as the fraction of problems whose tests pass.
Each completion runs in its own sandboxed interpreter (`mfmaccel.evaluate.sandbox`), so a wrong,
slow or hostile completion costs one failed sample, never the evaluation. pass@k uses the
unbiased estimator of Chen et al. (2021), "Evaluating Large Language Models Trained on Code".
"""

from __future__ import annotations

import ast
import re
import textwrap
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from mfmaccel.data.code import CodeProblem
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.sandbox import SandboxLimits, SandboxResult, run_python
from mfmaccel.records import Record


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed: 1 - C(n-c, k) / C(n, k).

    Computed as a running product, never forming the huge binomials, so it stays exact enough
    for any n.
    """
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs n >= 1, 0 <= c <= n, 1 <= k <= n; got {n=}, {c=}, {k=}")
    if n - c < k:
        return 1.0
    fail_all = 1.0
    for i in range(n - c + 1, n + 1):
        fail_all *= 1.0 - k / i
    return 1.0 - fail_all


def check_completion(
    problem: CodeProblem, completion: str, limits: SandboxLimits | None = None
) -> SandboxResult:
    """Run prompt + completion + the problem's tests in the sandbox; passed = all asserts held.

    `check(entry_point)` runs as the sandbox's check, after the program: passing needs the
    guard's token line that follows it, so a completion that exits early (even with status 0)
    or prints an imitation fails, as in the reference harness.
    """
    program = problem.prompt + completion + "\n" + problem.test + "\n"
    return run_python(program, limits, checks=[f"check({problem.entry_point})"])


@dataclass
class HumanEvalResult(Record):
    """Scores of one run. `n_samples` is the number of completions per problem (the smallest,
    if `generate` returned different numbers); `per_problem` rows hold task_id, n, n_correct,
    statuses, the first failure's one-line reason and the completions themselves (so a later
    comparison, e.g. a cascade, can reuse them without generating again), and, where the
    generator counted them, `generated_tokens`: the tokens each completion took to generate
    (what it cost, however much extraction kept)."""

    n_problems: int
    n_samples: int
    pass_at_k: dict[str, float]
    per_problem: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def evaluate_humaneval(
    problems: list[CodeProblem],
    generate: Callable[[CodeProblem], list[str]],
    *,
    ks: tuple[int, ...] = (1,),
    limits: SandboxLimits | None = None,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
    generated_tokens: dict[str, list[int]] | None = None,
) -> HumanEvalResult:
    """Generate completions per problem, check each in the sandbox, and report pass@k.

    `generate(problem)` returns the n completions of `problem.prompt` (apply `extract_completion`
    there for chat models). Generation runs in this thread, one problem at a time, while a pool
    of `workers` threads checks earlier completions (each check is its own subprocess).
    `progress(done, total)` is called as each problem's checks finish. pass@k is reported for
    each k in `ks` that is at most the number of completions of every problem.
    `generated_tokens[task_id]` (one count per completion) goes into that problem's row.
    """
    if not problems:
        raise UserInputError("no problems to evaluate; load some with load_humaneval()")
    if any(not isinstance(k, int) or k < 1 for k in ks):
        raise UserInputError(f"ks must be positive integers, got {ks}; e.g. ks=(1, 10)")
    start = time.monotonic()
    rows: list[dict] = []
    pending: deque[tuple[CodeProblem, list[str], list[int] | None, list[Future]]] = deque()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for problem in problems:
            completions = _as_completions(problem, generate(problem))
            counts = _token_counts(problem, completions, generated_tokens)
            futures = [pool.submit(check_completion, problem, c, limits) for c in completions]
            pending.append((problem, completions, counts, futures))
            _collect(pending, rows, len(problems), progress, block=False)
        _collect(pending, rows, len(problems), progress, block=True)
    n_min = min(row["n"] for row in rows)
    scores = {
        f"pass@{k}": sum(pass_at_k(row["n"], row["n_correct"], k) for row in rows) / len(rows)
        for k in sorted(set(ks))
        if k <= n_min
    }
    return HumanEvalResult(len(rows), n_min, scores, rows, time.monotonic() - start)


def _as_completions(problem: CodeProblem, generated: list[str] | str) -> list[str]:
    completions = [generated] if isinstance(generated, str) else list(generated)
    if not completions:
        raise UserInputError(f"generate() returned no completions for {problem.task_id}")
    return completions


def _token_counts(problem: CodeProblem, completions: list[str],
                  generated_tokens: dict[str, list[int]] | None) -> list[int] | None:
    if generated_tokens is None or problem.task_id not in generated_tokens:
        return None
    return checked_token_counts(problem.task_id, generated_tokens[problem.task_id],
                                len(completions), fix="pass one per completion")


def checked_token_counts(task_id: str, counts: list, completions: int, *, fix: str) -> list[int]:
    """A row's `generated_tokens`: one count of 0 or more per completion, or one line naming
    `fix` (the same rule where the record is written and where the cascade reads it)."""
    if len(counts) != completions or any(not isinstance(n, int) or n < 0 for n in counts):
        raise UserInputError(f"{task_id}: {len(counts)} generated token counts for {completions} "
                             f"completions (generated_tokens needs one count of 0 or more per "
                             f"completion); {fix}")
    return list(counts)


def _collect(pending, rows, total, progress, block: bool) -> None:
    """Move finished problems, in order, from `pending` to `rows`."""
    while pending and (block or all(f.done() for f in pending[0][-1])):
        problem, completions, counts, futures = pending.popleft()
        results = [f.result() for f in futures]
        failures = [r.detail or r.status for r in results if not r.passed]
        rows.append(
            {
                "task_id": problem.task_id,
                "n": len(results),
                "n_correct": sum(r.passed for r in results),
                "statuses": [r.status for r in results],
                "first_failure": failures[0] if failures else "",
                "completions": completions,
            }
        )
        if counts is not None:
            rows[-1]["generated_tokens"] = counts
        if progress is not None:
            progress(len(rows), total)


# ----------------------------------------------------------------------------- extraction

_THINK = re.compile(r"<think>.*?</think>", re.S)
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.S | re.M)
_PYTHON_TAGS = {"", "python", "py", "python3", "py3"}
_CODE_START = re.compile(r"^(def |async def |class |import |from \S+ import |@)", re.M)
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_KEPT_NODES = (ast.Import, ast.ImportFrom, *_DEFINITIONS)


def extract_completion(problem: CodeProblem, generated: str) -> str:
    """Turn a model's raw answer into text that completes `problem.prompt`.

    * A full `def <entry_point>` (in a ```python fence, after the repeated prompt, or with prose
      around it): the definitions (imports, functions, classes, constants) are returned after a
      newline, so prompt + completion first defines the prompt's docstring-only function and then
      redefines it, with the prompt's imports and helpers still in scope. Top-level test code
      (prints, asserts, `if __name__ == "__main__":`) is dropped.
    * The prompt repeated, then a body: the text after the prompt, cut like a continuation.
    * A plain continuation (a base model's function body): cut at the first top-level line
      (the usual stop sequences "\\ndef ", "\\nclass ", "\\nif __name__", "\\nprint(", "\\n#").
    """
    text = _THINK.sub("", generated.replace("\r\n", "\n"))
    entry_point = problem.entry_point
    block = _pick_block(text, entry_point)
    if block is None:
        after = _after_prompt(text, problem.prompt)
        if after is not None:
            return _body(after, problem.prompt)
        if _starts_indented(text) or not _defines(text, entry_point):
            return _body(text, problem.prompt)
        block = _from_code_start(text)
    if _defines(block, entry_point):
        return "\n" + _definitions(textwrap.dedent(block)) + "\n"
    after = _after_prompt(block, problem.prompt)
    return _body(after if after is not None else block, problem.prompt)


def _pick_block(text: str, entry_point: str) -> str | None:
    """The first Python fenced block defining `entry_point`, else the first Python block."""
    blocks = [body for tag, body in _FENCE.findall(text) if tag.lower() in _PYTHON_TAGS]
    blocks = [b for b in blocks if b.strip()]
    for body in blocks:
        if _defines(body, entry_point):
            return body
    return blocks[0] if blocks else None


def _defines(code: str, entry_point: str) -> bool:
    pattern = rf"^(async\s+)?def\s+{re.escape(entry_point)}\s*\("
    return re.search(pattern, textwrap.dedent(code), re.M) is not None


def _after_prompt(text: str, prompt: str) -> str | None:
    """The text after a verbatim repeat of the prompt, if the prompt is repeated."""
    stripped = prompt.rstrip()
    index = text.find(stripped) if stripped else -1
    return None if index < 0 else text[index + len(stripped) :].lstrip("\n")


def _starts_indented(text: str) -> bool:
    first = next((line for line in text.split("\n") if line.strip()), "")
    return first[:1].isspace()


def _body(text: str, prompt: str) -> str:
    """A function body continuation: indented lines up to the first top-level line or fence."""
    lines = text.split("\n")
    if not any(line[:1].isspace() for line in lines if line.strip()):
        lines = textwrap.indent(text, "    ").split("\n")  # an unindented body, e.g. in a fence
    kept: list[str] = []
    started = False
    for line in lines:
        stop = bool(line.strip()) and not line[:1].isspace() or line.strip().startswith("```")
        if stop and started:
            break
        if stop:
            continue  # prose or a fence before the body
        started = started or bool(line.strip())
        kept.append(line)
    separator = "" if prompt.endswith("\n") else "\n"
    return separator + "\n".join(kept).strip("\n").rstrip() + "\n"


def _from_code_start(text: str) -> str:
    """Drop prose before the first top-level def/class/import/decorator line."""
    match = _CODE_START.search(text)
    return text[match.start() :] if match else text


def _definitions(code: str) -> str:
    """Keep imports, functions, classes and simple assignments; drop top-level test code.

    Trailing prose is cut by parsing ever shorter prefixes until one is valid Python.
    """
    lines = code.split("\n")
    for end in range(len(lines), 0, -1):
        source = "\n".join(lines[:end])
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        return _keep_nodes(tree, lines[:end])
    return code


def _keep_nodes(tree: ast.Module, lines: list[str]) -> str:
    defined = {n.name for n in tree.body if isinstance(n, _DEFINITIONS)}
    kept = []
    for node in tree.body:
        if isinstance(node, _KEPT_NODES) or _is_plain_assignment(node, defined):
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            kept.append("\n".join(lines[first - 1 : node.end_lineno]))
    return "\n\n".join(kept)


def _is_plain_assignment(node: ast.stmt, defined: set[str]) -> bool:
    """A module-level constant (e.g. `MOD = 10**9 + 7`), not a call of the solution itself."""
    if not isinstance(node, ast.Assign | ast.AnnAssign):
        return False
    calls = [n for n in ast.walk(node) if isinstance(n, ast.Call)]
    return not any(isinstance(c.func, ast.Name) and c.func.id in defined for c in calls)

"""Test lines a model writes for a problem: the published cascade's l generated tests, added to
the asserts taken from the prompt's own examples (`decode.selftest`).

The model sees the signature and docstring and is asked for assert lines; every line that is
a valid `assert` calling the entry point is kept, in order, without repeats. A small model's
asserts can be wrong; a wrong one only makes its own candidates fail and the query escalate,
which calibrating theta accounts for. What the lines cost to write is counted as FLOPs.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass, field

from mfmaccel.data.code import CodeProblem
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.codegen import batched_replies, chat_or_raw_ids
from mfmaccel.models.record import LoadedModel

REQUEST = (
    "Here is a Python function to be written:\n\n```python\n{prompt}```\n\n"
    "Write {count} different assert statements that check `{entry}` on typical and edge-case "
    "inputs, one per line. Reply with only the assert lines in one ```python block."
)
RAW = "{prompt}    ...\n\n\n# {count} tests of {entry}\n"  # for a model without a chat template


@dataclass
class WrittenTests:
    lines: list[str] = field(default_factory=list)
    tokens: int = 0  # prompt + generated tokens: what writing them cost


def assert_lines(text: str, entry_point: str) -> list[str]:
    """The valid `assert` lines calling `entry_point` in `text` (its first code block, if any)."""
    if "```" in text:
        text = text.split("```", 2)[1].removeprefix("python")
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("assert ") and f"{entry_point}(" in line and _parses(line):
            lines.append(line)
    return list(dict.fromkeys(lines))


def _parses(line: str) -> bool:
    try:
        ast.parse(line)
    except SyntaxError:
        return False
    return True


def generate_tests(model: LoadedModel, problems: Sequence[CodeProblem], *, count: int = 5,
                   max_new_tokens: int = 192, batch_size: int = 16) -> dict[str, WrittenTests]:
    """Up to `count` generated assert lines per problem (greedy), and what each set cost."""
    if count < 1:
        raise UserInputError(f"the number of generated test lines must be at least 1, got {count}")
    prompts = {p.task_id: chat_or_raw_ids(
        model, REQUEST.format(prompt=p.prompt, count=count, entry=p.entry_point),
        RAW.format(prompt=p.prompt, count=count, entry=p.entry_point))[0].tolist()
        for p in problems}
    replies = batched_replies(model, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens)
    return {p.task_id: WrittenTests(
        assert_lines(replies[p.task_id][0].text, p.entry_point)[:count],
        len(prompts[p.task_id]) + replies[p.task_id][0].tokens)
        for p in problems}

"""HumanEval and HumanEval-format loaders: the bundled set, subsets, and bad files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from mfmaccel.data.code import CodeProblem, humaneval_subset, load_code_jsonl, load_humaneval
from mfmaccel.errors import UserInputError


def _record(i: int) -> dict[str, str]:
    return {
        "task_id": f"Toy/{i}",
        "prompt": f'def add_{i}(x):\n    """Add {i}."""\n',
        "canonical_solution": f"    return x + {i}\n",
        "test": f"def check(candidate):\n    assert candidate(1) == {i + 1}\n",
        "entry_point": f"add_{i}",
    }


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _error(path: Path) -> str:
    with pytest.raises(UserInputError) as info:
        load_code_jsonl(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_load_humaneval_has_164_unique_problems():
    problems = load_humaneval()
    assert len(problems) == 164
    assert len({p.task_id for p in problems}) == 164
    assert problems[0].task_id == "HumanEval/0"
    assert all(isinstance(p, CodeProblem) for p in problems)
    assert all(f"def {p.entry_point}(" in p.prompt and "def check(" in p.test for p in problems)


def test_subset_is_fixed_ordered_and_nested():
    problems = load_humaneval()
    first = humaneval_subset(problems, 10)
    assert [p.task_id for p in first] == [p.task_id for p in humaneval_subset(problems, 10)]
    assert len(first) == 10
    order = [problems.index(p) for p in first]
    assert order == sorted(order)
    assert {p.task_id for p in first} <= {p.task_id for p in humaneval_subset(problems, 11)}
    assert {p.task_id for p in first} != {p.task_id for p in humaneval_subset(problems, 10, 1)}
    shuffled = list(reversed(problems))
    assert {p.task_id for p in humaneval_subset(shuffled, 10)} == {p.task_id for p in first}
    assert humaneval_subset(problems, 164) == problems
    for bad in (0, 165):
        with pytest.raises(UserInputError):
            humaneval_subset(problems, bad)


def test_load_jsonl_and_gzip(tmp_path):
    lines = [json.dumps(_record(i)) for i in range(3)]
    plain = _write_jsonl(tmp_path / "toy.jsonl", lines[:2] + [""] + lines[2:])
    problems = load_code_jsonl(plain)
    assert [p.task_id for p in problems] == ["Toy/0", "Toy/1", "Toy/2"]
    assert problems[1].canonical_solution == "    return x + 1\n"
    packed = tmp_path / "toy.jsonl.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    assert load_code_jsonl(str(packed)) == problems


def test_missing_path(tmp_path):
    message = _error(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in message and "does not exist" in message


def test_malformed_line_gives_its_number(tmp_path):
    path = _write_jsonl(tmp_path / "bad.jsonl", [json.dumps(_record(0)), "{not json", "x"])
    message = _error(path)
    assert "bad.jsonl:2:" in message and "line 2" in message and "malformed JSON" in message


def test_missing_key_gives_line_and_key(tmp_path):
    broken = _record(2)
    del broken["entry_point"]
    lines = [json.dumps(_record(0)), json.dumps(_record(1)), json.dumps(broken)]
    message = _error(_write_jsonl(tmp_path / "keys.jsonl", lines))
    assert "keys.jsonl:3:" in message and "'entry_point'" in message


def test_other_bad_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    assert "no problems" in _error(empty)
    duplicate = _write_jsonl(tmp_path / "dup.jsonl", [json.dumps(_record(0))] * 2)
    assert "dup.jsonl:2:" in _error(duplicate)
    not_object = _write_jsonl(tmp_path / "list.jsonl", ["[1, 2]"])
    assert "list.jsonl:1:" in _error(not_object)
    wrong_type = _write_jsonl(tmp_path / "type.jsonl", [json.dumps({**_record(0), "test": 3})])
    assert "'test'" in _error(wrong_type)
    broken_gzip = tmp_path / "broken.jsonl.gz"
    broken_gzip.write_bytes(b"\x1f\x8b not really gzip")
    assert "broken.jsonl.gz" in _error(broken_gzip)

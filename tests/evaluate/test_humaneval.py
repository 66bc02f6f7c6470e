"""pass@k, checking completions in the sandbox, and turning chat answers into completions."""

from __future__ import annotations

import json
from math import comb

import pytest

from mfmaccel.data.code import CodeProblem, humaneval_subset, load_humaneval
from mfmaccel.evaluate.humaneval import (
    HumanEvalResult,
    check_completion,
    evaluate_humaneval,
    extract_completion,
    pass_at_k,
)

WRONG = "    return None\n"


@pytest.fixture(scope="module")
def subset() -> list[CodeProblem]:
    return humaneval_subset(load_humaneval(), 10)


def test_pass_at_k_hand_values():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 10) == 1.0  # k = n with any correct sample
    assert pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - 21 / 45)  # 1 - C(7,2)/C(10,2)
    for n, c, k in [(20, 4, 5), (200, 13, 10), (7, 1, 3)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))
    assert pass_at_k(100_000, 1, 1) == pytest.approx(1e-5)  # no overflow for large n
    for bad in [(0, 0, 1), (5, 6, 1), (5, 1, 0), (5, 1, 6)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_canonical_solutions_pass_and_wrong_ones_fail(subset):
    seen = []
    good = evaluate_humaneval(
        subset, lambda p: [p.canonical_solution], progress=lambda d, t: seen.append((d, t))
    )
    assert isinstance(good, HumanEvalResult)
    assert good.pass_at_k == {"pass@1": 1.0}, [r for r in good.per_problem if r["n_correct"] < 1]
    assert good.n_problems == 10 and good.n_samples == 1
    assert seen == [(i, 10) for i in range(1, 11)]
    assert [r["task_id"] for r in good.per_problem] == [p.task_id for p in subset]
    bad = evaluate_humaneval(subset, lambda p: [WRONG])
    assert bad.pass_at_k == {"pass@1": 0.0}
    assert all(r["statuses"] == ["failed"] and r["first_failure"] for r in bad.per_problem)
    json.loads(bad.to_json())


def test_empty_completion_fails(subset):
    result = check_completion(subset[0], "")
    assert result.status == "failed"


def test_pass_at_k_over_mixed_samples(subset, tmp_path):
    three = subset[:3]
    result = evaluate_humaneval(
        three, lambda p: [p.canonical_solution, WRONG], ks=(1, 2, 5), workers=3
    )
    assert result.pass_at_k == {"pass@1": 0.5, "pass@2": 1.0}  # pass@5 needs n >= 5
    assert result.n_samples == 2
    assert all(r["n"] == 2 and r["n_correct"] == 1 for r in result.per_problem)
    saved = json.loads(result.save(tmp_path / "he.json").read_text())
    assert saved["pass_at_k"]["pass@2"] == 1.0 and saved["seconds"] > 0


def _chat_outputs(problem: CodeProblem) -> list[str]:
    """Answers as instruct/chat models really write them, all wrapping the canonical solution."""
    full = problem.prompt + problem.canonical_solution
    name = problem.entry_point
    return [
        # fenced full function, prose around, a second block with usage examples
        f"Here is the implementation:\n\n```python\n{full}```\n\nIt works by iterating once."
        f"\n\nExample:\n```python\nprint({name}(1))\n```\n",
        # prompt repeated as plain text, then a doctest main block
        full + "\n\nif __name__ == '__main__':\n    import doctest\n    doctest.testmod()\n",
        # plain continuation from a base model that runs on into the next function
        problem.canonical_solution + "\n\ndef main():\n    print('hi')\n\nmain()\n",
        problem.canonical_solution + "\n# Test the function\nprint(" + name + "(None))\n",
        # reasoning trace first, then an unfenced function with trailing prose and a bad assert
        "<think>Try a draft.\n```python\ndef wrong(): pass\n```</think>\nSure! "
        + full
        + "\nExplanation: this is linear.\nassert False\n",
        # fence without a language tag, cut off before the closing fence
        "```\n" + full,
    ]


def test_extract_completion_on_chat_outputs_passes(subset):
    problems = subset[:5]
    result = evaluate_humaneval(
        problems, lambda p: [extract_completion(p, text) for text in _chat_outputs(p)]
    )
    failing = [r for r in result.per_problem if r["n_correct"] != r["n"]]
    assert not failing, failing
    assert result.pass_at_k == {"pass@1": 1.0}


def _toy() -> CodeProblem:
    return CodeProblem(
        task_id="Toy/0",
        prompt='from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum."""\n',
        canonical_solution="    return sum(xs)\n",
        test="def check(candidate):\n    assert candidate([1, 2]) == 3\n",
        entry_point="total",
    )


def test_extract_completion_shapes():
    toy = _toy()
    body = "    return sum(xs)\n"
    for stop in [
        "\ndef helper():\n",
        "\nclass A:\n",
        "\nif __name__ == '__main__':\n",
        "\nprint(total([1]))\n",
        "\n# tests\n",
    ]:
        assert extract_completion(toy, body + stop + "    pass\n") == body
    fenced = "Answer:\n```python\ndef total(xs):\n    return sum(xs)\n\nprint(total([1]))\n```"
    assert extract_completion(toy, fenced) == "\ndef total(xs):\n    return sum(xs)\n"
    only_body = "```python\nreturn sum(xs)\n```"
    assert extract_completion(toy, only_body) == body
    repeated = toy.prompt + body + "\n\nprint(total([3]))\n"
    assert extract_completion(toy, repeated) == body
    constants = (
        "```python\nBASE = 0\n\ndef total(xs):\n    return BASE + sum(xs)\n\nx = total([1])\n```"
    )
    assert extract_completion(toy, constants) == (
        "\nBASE = 0\n\ndef total(xs):\n    return BASE + sum(xs)\n"
    )

"""Prompting for code: chat-formatted prompts, batched completions that go through the sandbox."""

from __future__ import annotations

import pytest

from mfmaccel.data.code import humaneval_subset, load_humaneval
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.codegen import (
    block_closed,
    code_completions,
    code_prompt_ids,
)
from mfmaccel.evaluate.humaneval import evaluate_humaneval
from mfmaccel.evaluate.run import TaskData, TaskOptions, measure_task
from mfmaccel.models import load_model
from mfmaccel.runtime.engine import eos_ids, generate_batch
from mfmaccel.runtime.sampling import Sampling


def test_raw_prompt_without_chat_template(tiny_llama) -> None:
    problem = load_humaneval()[0]
    ids = code_prompt_ids(tiny_llama, problem)[0].tolist()
    assert tiny_llama.tokenizer.decode(ids, skip_special_tokens=True) == problem.prompt


def test_chat_prompt_wraps_the_problem(smollm2) -> None:
    problem = load_humaneval()[0]
    text = smollm2.tokenizer.decode(code_prompt_ids(smollm2, problem)[0])
    assert problem.prompt.strip() in text and "```python" in text
    assert text.rstrip().endswith("assistant")


def test_completions_for_every_problem_then_sandboxed(tiny_llama) -> None:
    problems = humaneval_subset(load_humaneval(), 3)
    seen = []
    completions = code_completions(tiny_llama, problems, batch_size=2, max_new_tokens=8,
                                   progress=lambda done, total: seen.append((done, total))).texts
    assert sorted(completions) == sorted(p.task_id for p in problems)
    assert seen[-1] == (3, 3)
    result = evaluate_humaneval(problems, lambda p: completions[p.task_id], ks=(1,))
    assert result.pass_at_k["pass@1"] == 0.0  # random weights write no working code
    assert result.n_problems == 3


def test_k_sampled_candidates_repeat_with_the_seed(tiny_llama) -> None:
    problems = humaneval_subset(load_humaneval(), 2)
    hot = Sampling(temperature=1.5, seed=3)
    first = code_completions(tiny_llama, problems, batch_size=4, max_new_tokens=6,
                             samples=3, sampling=hot).texts
    again = code_completions(tiny_llama, problems, batch_size=4, max_new_tokens=6,
                             samples=3, sampling=hot).texts
    assert first == again and all(len(c) == 3 for c in first.values())
    assert any(len(set(c)) > 1 for c in first.values())  # sampling, not three greedy copies
    result = evaluate_humaneval(problems, lambda p: first[p.task_id], ks=(1, 2))
    assert result.n_samples == 3 and set(result.pass_at_k) == {"pass@1", "pass@2"}


def test_several_samples_need_a_temperature(tiny_llama) -> None:
    problems = humaneval_subset(load_humaneval(), 1)
    with pytest.raises(UserInputError, match="temperature above 0"):
        code_completions(tiny_llama, problems, samples=2)
    with pytest.raises(UserInputError, match="temperature above 0"):
        TaskOptions(samples=4)


def _engine_tokens(model, problem, max_new_tokens: int) -> list[int]:
    """What the engine generates for one problem on its own, with the evaluation's stops."""
    return generate_batch(model.module, [code_prompt_ids(model, problem)[0].tolist()],
                          max_new_tokens=max_new_tokens, pad_token_id=0,
                          eos_token_ids=eos_ids(model.module, model.tokenizer),
                          row_done=block_closed(model.tokenizer))[0]


def test_each_completion_counts_the_tokens_the_engine_generated() -> None:
    """Up to and including the stop: the first problem's 4th greedy token is made its end of
    turn, so it stops after 4 while the others run to the limit (or their own stop)."""
    model = load_model("tiny-llama")
    problems = humaneval_subset(load_humaneval(), 3)
    first = _engine_tokens(model, problems[0], 24)
    stop = first[3]
    model.module.generation_config.eos_token_id = stop
    expected = {p.task_id: len(_engine_tokens(model, p, 24)) for p in problems}
    assert expected[problems[0].task_id] == first.index(stop) + 1 <= 4
    completions = code_completions(model, problems, batch_size=1, max_new_tokens=24)
    assert completions.tokens == {task: [n] for task, n in expected.items()}
    result = measure_task(model, TaskData("humaneval", problems, "humaneval"),
                          TaskOptions(max_new_tokens=24))
    rows = {row["task_id"]: row for row in result.to_dict()["per_problem"]}
    assert {task: row["generated_tokens"] for task, row in rows.items()} == completions.tokens


def test_humaneval_rows_keep_one_count_per_completion(tiny_llama) -> None:
    problems = humaneval_subset(load_humaneval(), 2)
    counts = {p.task_id: [5, 9] for p in problems}
    result = evaluate_humaneval(problems, lambda p: ["    pass\n", "    return 1\n"],
                                generated_tokens=counts)
    assert [row["generated_tokens"] for row in result.per_problem] == [[5, 9], [5, 9]]
    assert "generated_tokens" not in evaluate_humaneval(
        problems, lambda p: ["    pass\n"]).per_problem[0]
    with pytest.raises(UserInputError, match="2 generated token counts for 1 completions"):
        evaluate_humaneval(problems, lambda p: ["    pass\n"], generated_tokens=counts)

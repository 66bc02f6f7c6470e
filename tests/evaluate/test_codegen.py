"""Prompting for code: chat-formatted prompts, batched completions that go through the sandbox."""

from __future__ import annotations

import pytest

from mfmaccel.data.code import humaneval_subset, load_humaneval
from mfmaccel.decode.sampling import Sampling
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.codegen import batched_completions, code_prompt_ids
from mfmaccel.evaluate.humaneval import evaluate_humaneval
from mfmaccel.evaluate.run import TaskOptions


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
    completions = batched_completions(tiny_llama, problems, batch_size=2, max_new_tokens=8,
                                      progress=lambda done, total: seen.append((done, total)))
    assert sorted(completions) == sorted(p.task_id for p in problems)
    assert seen[-1] == (3, 3)
    result = evaluate_humaneval(problems, lambda p: completions[p.task_id], ks=(1,))
    assert result.pass_at_k["pass@1"] == 0.0  # random weights write no working code
    assert result.n_problems == 3


def test_k_sampled_candidates_repeat_with_the_seed(tiny_llama) -> None:
    problems = humaneval_subset(load_humaneval(), 2)
    hot = Sampling(temperature=1.5, seed=3)
    first = batched_completions(tiny_llama, problems, batch_size=4, max_new_tokens=6,
                                samples=3, sampling=hot)
    again = batched_completions(tiny_llama, problems, batch_size=4, max_new_tokens=6,
                                samples=3, sampling=hot)
    assert first == again and all(len(c) == 3 for c in first.values())
    assert any(len(set(c)) > 1 for c in first.values())  # sampling, not three greedy copies
    result = evaluate_humaneval(problems, lambda p: first[p.task_id], ks=(1, 2))
    assert result.n_samples == 3 and set(result.pass_at_k) == {"pass@1", "pass@2"}


def test_several_samples_need_a_temperature(tiny_llama) -> None:
    problems = humaneval_subset(load_humaneval(), 1)
    with pytest.raises(UserInputError, match="temperature above 0"):
        batched_completions(tiny_llama, problems, samples=2)
    with pytest.raises(UserInputError, match="temperature above 0"):
        TaskOptions(samples=4)

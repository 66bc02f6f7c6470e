"""Prompting for code: chat-formatted prompts, batched completions that go through the sandbox."""

from __future__ import annotations

from mfmaccel.data.code import humaneval_subset, load_humaneval
from mfmaccel.evaluate.codegen import batched_completions, code_prompt_ids
from mfmaccel.evaluate.humaneval import evaluate_humaneval


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

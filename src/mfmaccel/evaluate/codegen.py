"""Prompting a causal LM for HumanEval completions: chat template when the model has one,
batched greedy decoding, each row stopping as soon as its code block is closed."""

from __future__ import annotations

from collections.abc import Callable

from mfmaccel.data.code import CodeProblem
from mfmaccel.decode.engine import eos_ids, greedy_generate_batch
from mfmaccel.evaluate.humaneval import extract_completion
from mfmaccel.models.record import LoadedModel

INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function in one "
    "```python code block.\n\n```python\n{prompt}```"
)


def code_prompt_ids(model: LoadedModel, problem: CodeProblem):
    """Token ids of the prompt: chat-formatted for instruct models, the raw prompt otherwise."""
    tokenizer = model.tokenizer
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": INSTRUCTION.format(prompt=problem.prompt)}]
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
    return tokenizer(problem.prompt, return_tensors="pt").input_ids


def _block_closed(tokenizer) -> Callable[[list[int]], bool]:
    """Stop once a ```python block has opened and closed (checked every 8 tokens)."""

    def should_stop(tokens: list[int]) -> bool:
        if len(tokens) % 8:
            return False
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        return text.count("```") >= 2

    return should_stop


def batched_completions(
    model: LoadedModel,
    problems: list[CodeProblem],
    batch_size: int = 16,
    max_new_tokens: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, list[str]]:
    """Greedy completions for many problems, decoded `batch_size` at a time.

    Problems are grouped by prompt length to keep padding small. Batched greedy decoding gives
    the same tokens as batch-1 up to float rounding of the padded matmuls.
    """
    prompts = {p.task_id: code_prompt_ids(model, p)[0].tolist() for p in problems}
    ordered = sorted(problems, key=lambda p: len(prompts[p.task_id]))
    stop_ids = eos_ids(model.module, model.tokenizer)
    pad = model.tokenizer.pad_token_id
    pad = pad if pad is not None else next(iter(stop_ids), 0)
    completions: dict[str, list[str]] = {}
    for start in range(0, len(ordered), batch_size):
        batch = ordered[start : start + batch_size]
        outputs = greedy_generate_batch(
            model.module, [prompts[p.task_id] for p in batch], max_new_tokens, pad,
            eos_token_ids=stop_ids, row_done=_block_closed(model.tokenizer),
        )
        for problem, tokens in zip(batch, outputs, strict=True):
            text = model.tokenizer.decode(tokens, skip_special_tokens=True)
            completions[problem.task_id] = [extract_completion(problem, text)]
        if progress:
            progress(len(completions), len(problems))
    return completions

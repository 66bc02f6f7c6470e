"""Prompting a causal LM for HumanEval completions: chat template when the model has one,
greedy decoding, stop as soon as the answer's code block is closed."""

from __future__ import annotations

from collections.abc import Callable

from mfmaccel.data.code import CodeProblem
from mfmaccel.decode.engine import eos_ids, greedy_generate
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
    """Stop once a ```python block has opened and closed (checked on the decoded tail)."""

    def should_stop(tokens: list[int]) -> bool:
        if len(tokens) % 8:
            return False
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        return text.count("```") >= 2

    return should_stop


def greedy_code_generator(
    model: LoadedModel, max_new_tokens: int = 512
) -> Callable[[CodeProblem], list[str]]:
    """`generate(problem) -> [completion]` for `evaluate_humaneval`, one greedy sample."""
    stop_ids = eos_ids(model.module, model.tokenizer)

    def generate(problem: CodeProblem) -> list[str]:
        ids = code_prompt_ids(model, problem)
        out = greedy_generate(
            model.module, ids, max_new_tokens, eos_token_ids=stop_ids,
            should_stop=_block_closed(model.tokenizer),
        )
        text = model.tokenizer.decode(out.tokens, skip_special_tokens=True)
        return [extract_completion(problem, text)]

    return generate

"""Prompting a causal LM for HumanEval completions: chat template when the model has one,
batched decoding (greedy, or k sampled candidates per problem), each row stopping as soon as
its code block is closed. Each reply keeps how many tokens generating it took, which is what it
cost (the cascade's FLOPs), however much of it extraction keeps."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from mfmaccel.data.code import CodeProblem
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.humaneval import extract_completion
from mfmaccel.models.record import LoadedModel
from mfmaccel.runtime.engine import eos_ids, generate_batch
from mfmaccel.runtime.sampling import Sampling

INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function in one "
    "```python code block.\n\n```python\n{prompt}```"
)


@dataclass
class Reply:
    text: str  # decoded, special tokens skipped
    tokens: int  # generated, up to and including the stop (end of turn, closing fence, limit)


@dataclass
class CodeCompletions:
    texts: dict[str, list[str]]  # task_id -> the extracted completions
    tokens: dict[str, list[int]]  # task_id -> tokens generated for each


def code_prompt_ids(model: LoadedModel, problem: CodeProblem):
    """Token ids of the prompt: chat-formatted for instruct models, the raw prompt otherwise."""
    return chat_or_raw_ids(model, INSTRUCTION.format(prompt=problem.prompt), problem.prompt)


def chat_or_raw_ids(model: LoadedModel, request: str, raw: str):
    """(1, T) ids of `request` as a user turn of the model's chat template, or of `raw` text
    for a model without one."""
    tokenizer = model.tokenizer
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": request}]
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
    return tokenizer(raw, return_tensors="pt").input_ids


def block_closed(tokenizer) -> Callable[[list[int]], bool]:
    """Stop once a ```python block has opened and closed (checked every 8 tokens)."""

    def should_stop(tokens: list[int]) -> bool:
        if len(tokens) % 8:
            return False
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        return text.count("```") >= 2

    return should_stop


def code_completions(
    model: LoadedModel,
    problems: list[CodeProblem],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 512,
    progress: Callable[[int, int], None] | None = None,
    samples: int = 1,
    sampling: Sampling | None = None,
) -> CodeCompletions:
    """`samples` completions per problem and the tokens each took to generate.

    Batched greedy decoding gives the same tokens as batch-1 up to float rounding of the padded
    matmuls. Sampled rows share one seeded generator per batch, so a run repeats exactly.
    """
    prompts = {p.task_id: code_prompt_ids(model, p)[0].tolist() for p in problems}
    replies = batched_replies(model, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                              progress=progress, samples=samples, sampling=sampling)
    return CodeCompletions(
        {p.task_id: [extract_completion(p, r.text) for r in replies[p.task_id]]
         for p in problems},
        {p.task_id: [r.tokens for r in replies[p.task_id]] for p in problems})


def batched_replies(
    model: LoadedModel,
    prompts: dict[str, list[int]],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 512,
    progress: Callable[[int, int], None] | None = None,
    samples: int = 1,
    sampling: Sampling | None = None,
) -> dict[str, list[Reply]]:
    """The decoded replies to many prompts (`samples` each), grouped by prompt length to keep
    padding small; a row stops at end of turn or once its code block is closed."""
    check_samples(samples, sampling)
    rows = [key for key in sorted(prompts, key=lambda k: len(prompts[k])) for _ in range(samples)]
    stop_ids = eos_ids(model.module, model.tokenizer)
    pad = model.tokenizer.pad_token_id
    pad = pad if pad is not None else next(iter(stop_ids), 0)
    replies: dict[str, list[Reply]] = {key: [] for key in prompts}
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        outputs = generate_batch(
            model.module, [prompts[key] for key in batch], max_new_tokens=max_new_tokens,
            pad_token_id=pad, eos_token_ids=stop_ids, row_done=block_closed(model.tokenizer),
            sampling=_batch_sampling(sampling, start),
        )
        for key, tokens in zip(batch, outputs, strict=True):
            replies[key].append(Reply(model.tokenizer.decode(tokens, skip_special_tokens=True),
                                      len(tokens)))
        if progress:
            progress(min(start + batch_size, len(rows)) // samples, len(prompts))
    return replies


def check_samples(samples: int, sampling: Sampling | None) -> None:
    """More than one answer per prompt needs sampling: greedy decoding gives one."""
    if samples < 1 or (samples > 1 and (sampling is None or sampling.greedy)):
        raise UserInputError(f"{samples} samples per problem need a temperature above 0 "
                             "(greedy decoding gives one answer); pass --temperature")


def _batch_sampling(sampling: Sampling | None, offset: int) -> Sampling | None:
    """The run's sampling with a seed of its own for the batch starting at row `offset`."""
    if sampling is None or sampling.greedy:
        return sampling
    return dataclasses.replace(sampling, seed=sampling.seed + offset)

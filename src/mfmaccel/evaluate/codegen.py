"""Prompting a causal LM for HumanEval completions: chat template when the model has one,
batched decoding (greedy, or k sampled candidates per problem), each row stopping as soon as
its code block is closed. Each reply keeps how many tokens generating it took, which is what it
cost (the cascade's FLOPs), however much of it extraction keeps.

The batches are the jobs of an executor (`mfmaccel.parallel`): in this process on the model at
hand, or on worker processes that each load the model by its name (`models.source`) once and
keep it. A batch's replies depend on its prompts, the model and its own seed only, so they are
the same whatever ran them and in whatever order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from mfmaccel.data.code import CodeProblem
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.humaneval import extract_completion
from mfmaccel.models.record import LoadedModel
from mfmaccel.models.source import ModelSource, loaded
from mfmaccel.parallel import IN_PROCESS, Executor, check_reachable
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


@dataclass(frozen=True)
class ReplyBatch:
    """One job: up to `batch_size` prompts decoded together, with the batch's own sampling
    (its seed set by its place in the run) and, for a worker, the model to load."""

    prompts: list[list[int]]
    max_new_tokens: int
    sampling: Sampling | None
    source: ModelSource | None = None


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
    executor: Executor = IN_PROCESS,
    source: ModelSource | None = None,
) -> CodeCompletions:
    """`samples` completions per problem and the tokens each took to generate; the batches run
    on `executor` (workers load `source`, which names `model`).

    Batched greedy decoding gives the same tokens as batch-1 up to float rounding of the padded
    matmuls. Sampled rows share one seeded generator per batch, so a run repeats exactly.
    """
    prompts = {p.task_id: code_prompt_ids(model, p)[0].tolist() for p in problems}
    replies = batched_replies(model, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                              progress=progress, samples=samples, sampling=sampling,
                              executor=executor, source=source)
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
    executor: Executor = IN_PROCESS,
    source: ModelSource | None = None,
) -> dict[str, list[Reply]]:
    """The decoded replies to many prompts (`samples` each), grouped by prompt length to keep
    padding small; a row stops at end of turn or once its code block is closed. Off this
    process (`executor`), the workers load `source`: `model` itself never travels."""
    check_samples(samples, sampling)
    check_reachable(executor, source, model.name)
    rows = [key for key in sorted(prompts, key=lambda k: len(prompts[k])) for _ in range(samples)]
    starts = range(0, len(rows), batch_size)
    jobs = [ReplyBatch([prompts[key] for key in rows[start : start + batch_size]],
                       max_new_tokens, _batch_sampling(sampling, start),
                       None if executor.in_process else source) for start in starts]

    def problems_done(done: int, _total: int) -> None:
        if progress:
            progress(done // samples, len(prompts))

    sizes = [len(job.prompts) for job in jobs]
    if executor.in_process:
        answers = IN_PROCESS.map(lambda job: batch_replies(model, job), jobs, sizes=sizes,
                                 progress=problems_done)
    else:
        answers = executor.map(replies_on_worker, jobs, sizes=sizes, progress=problems_done)
    replies: dict[str, list[Reply]] = {key: [] for key in prompts}
    for start, batch in zip(starts, answers, strict=True):
        for key, reply in zip(rows[start : start + batch_size], batch, strict=True):
            replies[key].append(reply)
    return replies


def batch_replies(model: LoadedModel, batch: ReplyBatch) -> list[Reply]:
    """One batch decoded on `model`: a reply per prompt, in order."""
    stop_ids = eos_ids(model.module, model.tokenizer)
    pad = model.tokenizer.pad_token_id
    pad = pad if pad is not None else next(iter(stop_ids), 0)
    outputs = generate_batch(
        model.module, batch.prompts, max_new_tokens=batch.max_new_tokens, pad_token_id=pad,
        eos_token_ids=stop_ids, row_done=block_closed(model.tokenizer), sampling=batch.sampling)
    return [Reply(model.tokenizer.decode(tokens, skip_special_tokens=True), len(tokens))
            for tokens in outputs]


def replies_on_worker(batch: ReplyBatch) -> list[Reply]:
    """A worker's job: the batch on the model its source names (loaded once per process)."""
    if batch.source is None:
        raise ValueError("a batch sent to a worker needs the source of its model")
    return batch_replies(loaded(batch.source), batch)


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

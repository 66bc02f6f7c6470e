"""One entry point for every measure: check the data first, then load the model, then measure.

Data is loaded before the model so that a bad path fails in a second, not after a model load;
the pipeline loads each task's data once and measures it after every stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.choices import Task
from mfmaccel.models import CAUSAL_LM, VLM, LoadedModel, load_model
from mfmaccel.models.loader import model_kind
from mfmaccel.models.source import ModelSource
from mfmaccel.parallel import IN_PROCESS, Executor
from mfmaccel.records import Record

if TYPE_CHECKING:
    from mfmaccel.data.medvqa import VQASample

NEEDS = {Task.ppl: (CAUSAL_LM,), Task.humaneval: (CAUSAL_LM,), Task.medvqa: (VLM,),
         Task.medvqa2: (VLM,), Task.speed: (CAUSAL_LM, VLM)}
VQA_TASKS = (Task.medvqa, Task.medvqa2)
EXAMPLES = {CAUSAL_LM: "smollm2-135m, qwen2.5-coder-0.5b or tiny-llama", VLM: "tiny-llava"}
# Tasks whose work is cut into jobs an executor may run elsewhere (`mfmaccel.parallel`): only
# HumanEval's generation. Speed must time one process alone; the others run in one pass.
SPLIT_TASKS = (Task.humaneval,)


@dataclass
class TaskData:
    """A task's evaluation items, where they came from, and a baseline to compare against."""

    task: str
    items: Any
    source: str
    baseline: dict[str, float] | None = None


@dataclass
class TaskOptions:
    context: int | None = None  # perplexity: 512, or the model's window where shorter
    stride: int | None = None
    max_tokens: int | None = None
    mode: str = "rank"
    max_new_tokens: int | None = None
    samples: int = 1  # humaneval: completions per problem (pass@k for k up to this)
    temperature: float = 0.0  # humaneval: 0 is greedy; sampling needs more than 0
    top_p: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        """Refuse impossible sampling before any model loads."""
        from mfmaccel.evaluate.codegen import check_samples
        from mfmaccel.runtime.sampling import Sampling

        check_samples(self.samples, Sampling(self.temperature, top_p=self.top_p))


def check_model_fits(model_spec: str, task: str) -> None:
    """Refuse a task the model cannot do, before loading anything heavy."""
    check_kind_fits(model_kind(model_spec), model_spec, task)


def check_kind_fits(kind: str, model_name: str, task: str) -> None:
    if task not in tuple(Task):
        raise UserInputError(f"unknown task '{task}'; choose one of: {', '.join(Task)}")
    if kind not in NEEDS[task]:
        wanted = NEEDS[task][0]
        raise UserInputError(
            f"task '{task}' needs a {wanted} model, but '{model_name}' is {kind}; "
            f"try {EXAMPLES[wanted]}"
        )


def load_task_data(task: str, data: Path | None, limit: int | None, seed: int) -> TaskData:
    """The evaluation items for `task`: the built-in set, or the user's copy at `data`."""
    if data is not None and not data.exists():
        raise UserInputError(f"dataset path {data} does not exist; check --data")
    if task == "ppl":
        from mfmaccel.data.text import load_text_corpus, load_text_file

        if data:
            return TaskData(task, load_text_file(data), str(data))
        return TaskData(task, load_text_corpus("test"), "pydoc-topics:test")
    if task == "humaneval":
        from mfmaccel.data.code import humaneval_subset, load_code_jsonl, load_humaneval

        problems = load_code_jsonl(data) if data else load_humaneval()
        problems = humaneval_subset(problems, limit, seed) if limit else problems
        return TaskData(task, problems, str(data) if data else "humaneval")
    if task == "medvqa":
        from mfmaccel.data.medvqa import majority_baseline, planned_answers

        samples = vqa_samples(data, "test", limit, seed)
        if data:
            return TaskData(task, samples, str(data))
        baseline = majority_baseline(planned_answers("train", seed=seed), samples)
        return TaskData(task, samples, "medvqa:test", baseline)
    if task == "medvqa2":
        from mfmaccel.data.medvqa import majority_baseline, planned_answers_v2

        if data:
            raise UserInputError("medvqa2 is built in and takes no --data; use --task medvqa "
                                 "--data DIR for your own VQA folder")
        samples = vqa_samples(None, "test", limit, seed, benchmark="medvqa2")
        baseline = majority_baseline(planned_answers_v2("train", seed=seed), samples)
        return TaskData(task, samples, "medvqa2:test", baseline)
    return TaskData(task, None, "prompt")


def vqa_samples(data: Path | None, split: str, limit: int | None,
                seed: int = 0, *,
                benchmark: str = "medvqa") -> list[VQASample]:
    """The first `limit` closed questions of `split`: the built-in benchmark's, or those of the
    user's VQA folder at `data`; only their images are made or decoded."""
    from mfmaccel.data.medvqa import load_benchmark, load_vqa_folder

    if data is not None and not data.exists():
        raise UserInputError(f"dataset path {data} does not exist; check --data")
    if limit is not None and limit < 1:
        raise UserInputError(f"--limit must be at least 1, got {limit}")
    if data:
        return load_vqa_folder(data, split=split, limit=limit)
    return load_benchmark(benchmark, split, seed=seed, limit=limit)


def measure_task(
    model: LoadedModel,
    data: TaskData,
    options: TaskOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    executor: Executor = IN_PROCESS,
    source: ModelSource | None = None,
) -> Record:
    """Measure one task on a loaded model; HumanEval's generation runs on `executor`, whose
    workers load `source` (the same model by name; None: `model` exists only here)."""
    options = options or TaskOptions()
    check_executor(data.task, executor)
    if data.task == "ppl":
        from mfmaccel.evaluate.ppl import perplexity

        return perplexity(model, data.items, context=options.context, stride=options.stride,
                          max_tokens=options.max_tokens, corpus=data.source, progress=progress)
    if data.task == "humaneval":
        from mfmaccel.evaluate.codegen import code_completions
        from mfmaccel.evaluate.humaneval import evaluate_humaneval
        from mfmaccel.runtime.sampling import Sampling

        sampling = Sampling(options.temperature, top_p=options.top_p, seed=options.seed)
        completions = code_completions(model, data.items,
                                       max_new_tokens=options.max_new_tokens or 384,
                                       progress=progress, samples=options.samples,
                                       sampling=sampling, executor=executor, source=source)
        ks = tuple(k for k in (1, 2, 5, 10, 100) if k <= options.samples)
        return evaluate_humaneval(data.items, lambda p: completions.texts[p.task_id], ks=ks,
                                  generated_tokens=completions.tokens)
    if data.task in VQA_TASKS:
        from mfmaccel.evaluate.vqa import vqa_accuracy

        return vqa_accuracy(model, data.items, mode=options.mode,
                            majority_baseline=data.baseline, progress=progress)
    from mfmaccel.evaluate.speed import measure_speed

    return measure_speed(model, new_tokens=options.max_new_tokens or 64)


def run_evaluation(
    model_spec: str,
    task: str,
    *,
    data: Path | None = None,
    limit: int | None = None,
    options: TaskOptions | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    adapt: Callable[[LoadedModel], LoadedModel] | None = None,
    executor: Executor = IN_PROCESS,
) -> Record:
    """Measure `task` for the model named by `model_spec`, changed by `adapt` once loaded (e.g.
    the execution knobs `mfmaccel cooptimize` chose); returns the task's record. Off this
    process (`executor`), each worker loads and adapts the model itself, so `adapt` must be
    picklable (`models.source.ModelSource`)."""
    check_model_fits(model_spec, task)
    check_executor(task, executor)
    source = None if executor.in_process else ModelSource(model_spec, seed, adapt)
    task_data = load_task_data(task, data, limit, seed)
    model = load_model(model_spec, seed=seed)
    return measure_task(adapt(model) if adapt else model, task_data, options, progress,
                        executor=executor, source=source)


def check_executor(task: str, executor: Executor) -> None:
    """Only a task cut into jobs goes off this process; the others are refused in one line
    rather than run here while the flags said otherwise."""
    if not executor.in_process and task not in SPLIT_TASKS:
        raise UserInputError(f"--workers and --scheduler apply to --task "
                             f"{', '.join(SPLIT_TASKS)} only; task '{task}' runs in this "
                             "process (drop them)")

"""One entry point for every measure: check the data first, then load the model, then measure.

Data is loaded before the model so that a bad path fails in a second, not after a model load.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mfmaccel.errors import UserInputError
from mfmaccel.models import CAUSAL_LM, VLM, load_model
from mfmaccel.models.loader import model_kind
from mfmaccel.records import Record

TASKS = ("ppl", "humaneval", "medvqa", "speed")
NEEDS = {"ppl": CAUSAL_LM, "humaneval": CAUSAL_LM, "medvqa": VLM, "speed": CAUSAL_LM}
EXAMPLES = {CAUSAL_LM: "smollm2-135m, qwen2.5-coder-0.5b or tiny-llama", VLM: "tiny-llava"}


def check_model_fits(model_spec: str, task: str) -> None:
    """Refuse a task the model cannot do, before loading anything heavy."""
    kind = model_kind(model_spec)
    if kind != NEEDS[task]:
        raise UserInputError(
            f"task '{task}' needs a {NEEDS[task]} model, but '{model_spec}' is {kind}; "
            f"try {EXAMPLES[NEEDS[task]]}"
        )


def _load_data(task: str, data: Path | None, limit: int | None, seed: int) -> Any:
    if data is not None and not data.exists():
        raise UserInputError(f"dataset path {data} does not exist; check --data")
    if task == "ppl":
        from mfmaccel.data.text import load_text_corpus, load_text_file

        return load_text_file(data) if data else load_text_corpus("test")
    if task == "humaneval":
        from mfmaccel.data.code import humaneval_subset, load_code_jsonl, load_humaneval

        problems = load_code_jsonl(data) if data else load_humaneval()
        return humaneval_subset(problems, limit, seed) if limit else problems
    if task == "medvqa":
        from mfmaccel.data.medvqa import load_medvqa, load_vqa_folder

        samples = load_vqa_folder(data, split="test") if data else load_medvqa("test", seed)
        return samples[:limit] if limit else samples
    return None


def run_evaluation(
    model_spec: str,
    task: str,
    data: Path | None = None,
    limit: int | None = None,
    context: int = 512,
    stride: int | None = None,
    max_tokens: int | None = None,
    mode: str = "rank",
    max_new_tokens: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Record:
    """Measure `task` for the model named by `model_spec`; returns the task's record."""
    if task not in TASKS:
        raise UserInputError(f"unknown task '{task}'; choose one of: {', '.join(TASKS)}")
    check_model_fits(model_spec, task)
    dataset = _load_data(task, data, limit, seed)
    model = load_model(model_spec, seed=seed)
    if task == "ppl":
        from mfmaccel.evaluate.ppl import perplexity

        corpus = str(data) if data else "pydoc-topics:test"
        return perplexity(model, dataset, context=context, stride=stride, max_tokens=max_tokens,
                          corpus=corpus, progress=progress)
    if task == "humaneval":
        from mfmaccel.evaluate.codegen import batched_completions
        from mfmaccel.evaluate.humaneval import evaluate_humaneval

        completions = batched_completions(model, dataset, max_new_tokens=max_new_tokens or 384,
                                          progress=progress)
        return evaluate_humaneval(dataset, lambda p: completions[p.task_id], ks=(1,))
    if task == "medvqa":
        from mfmaccel.data.medvqa import load_medvqa, majority_baseline
        from mfmaccel.evaluate.vqa import vqa_accuracy

        baseline = None if data else majority_baseline(load_medvqa("train", seed), dataset)
        return vqa_accuracy(model, dataset, mode=mode, majority_baseline=baseline,
                            progress=progress)
    from mfmaccel.evaluate.speed import measure_speed

    return measure_speed(model, new_tokens=max_new_tokens or 64)

"""The measurements taken at the start of a run and after every stage."""

from __future__ import annotations

from collections.abc import Callable

from mfmaccel.evaluate.run import TaskData, TaskOptions, measure_task
from mfmaccel.evaluate.speed import measure_speed
from mfmaccel.models.record import CAUSAL_LM, VLM, LoadedModel
from mfmaccel.pipeline.recipe import EvalSpec
from mfmaccel.records import Metrics

# Speed is the median of this many timed runs after a warm-up: one short run on a shared
# machine can be off by 10x (issue 20 saw 0.6 then 23.4 tok/s on an unchanged model).
SPEED_REPEATS = 3

# The one number per task that tables and plots show.
HEADLINE = {"ppl": "perplexity", "humaneval": "pass_at_k", "medvqa": "accuracy",
            "medvqa2": "accuracy"}


def headline(task: str, record: dict) -> float:
    value = record[HEADLINE[task]]
    return value["pass@1"] if task == "humaneval" else value


def measure(
    model: LoadedModel,
    tasks: list[TaskData],
    spec: EvalSpec,
    progress: Callable[[int, int], None] | None = None,
) -> Metrics:
    """Quality on every task, size, and (if asked) batch-1 generation speed."""
    metrics = Metrics(weight_bytes=model.weight_bytes, params=model.params)
    options = TaskOptions(context=spec.ppl_context, max_tokens=spec.ppl_tokens,
                          max_new_tokens=spec.max_new_tokens)
    for data in tasks:
        record = measure_task(model, data, options, progress).to_dict()
        metrics.quality[data.task] = headline(data.task, record)
        metrics.details[data.task] = record
    if spec.speed and model.kind in (CAUSAL_LM, VLM):
        speed = measure_speed(model, new_tokens=spec.speed_tokens, repeats=SPEED_REPEATS)
        metrics.prefill_seconds = speed.prefill_seconds
        metrics.decode_tokens_per_s = speed.decode_tokens_per_s
        metrics.peak_rss_bytes = speed.peak_rss_bytes
        metrics.details["speed"] = speed.to_dict()  # every repeat: the report's noise band
    return metrics

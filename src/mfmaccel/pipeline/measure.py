"""The measurements taken at the start of a run and after every stage."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from mfmaccel.decode.speed import DRAFT_KEY, measure_speculative_speed
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
    _measure_speed_into(metrics, model, spec)
    return metrics


def measure_speed_again(model: LoadedModel, spec: EvalSpec, previous: Metrics) -> Metrics:
    """`previous` with the speed measured again: for a stage that changes how fast the model
    generates, never what it generates (a lossless draft)."""
    metrics = dataclasses.replace(previous, quality=dict(previous.quality),
                                  details=dict(previous.details))
    _measure_speed_into(metrics, model, spec)
    return metrics


def _measure_speed_into(metrics: Metrics, model: LoadedModel, spec: EvalSpec) -> None:
    """Batch-1 generation speed, through the draft a `decode` stage chose when there is one
    (`model.meta["draft"]`), else our plain greedy loop."""
    if not spec.speed or model.kind not in (CAUSAL_LM, VLM):
        return
    draft = model.meta.get(DRAFT_KEY)
    if draft:
        speed = measure_speculative_speed(model, draft, new_tokens=spec.speed_tokens,
                                          repeats=SPEED_REPEATS)
    else:
        speed = measure_speed(model, new_tokens=spec.speed_tokens, repeats=SPEED_REPEATS)
    metrics.prefill_seconds = speed.prefill_seconds
    metrics.decode_tokens_per_s = speed.decode_tokens_per_s
    metrics.peak_rss_bytes = speed.peak_rss_bytes
    metrics.details["speed"] = speed.to_dict()  # every repeat: the report's noise band


def missed_bar(max_drop: dict[str, float], baseline: Metrics, after: Metrics) -> str:
    """Why `after` misses a stage's bar against the run's `baseline` ("" when it does not):
    perplexity may rise by a fraction of the baseline's, every other headline may fall by an
    absolute amount."""
    misses = []
    for task, drop in max_drop.items():
        before, now = baseline.quality[task], after.quality[task]
        if task == "ppl" and now > before * (1 + drop):
            misses.append(f"ppl {now:.3f} > {before * (1 + drop):.3f} allowed (baseline "
                          f"{before:.3f} + {drop:.0%})")
        elif task != "ppl" and now < before - drop:
            misses.append(f"{task} {now:.3f} < {before - drop:.3f} allowed (baseline "
                          f"{before:.3f} - {drop:g})")
    return "; ".join(misses)

"""The run's numbers as formatted rows, shared by the HTML table and the console table.

Both outputs must show the same thing, so the formatting and the "is this change good?"
judgement live here once: lower perplexity is better, higher accuracy and pass@1 are better,
smaller weights, lower latency and more tokens/s are better.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from mfmaccel.pipeline.rundir import RunState
from mfmaccel.progress import fmt_seconds
from mfmaccel.records import Metrics, StageResult

Verdict = Literal["better", "worse", "same", ""]
MINUS = "\u2212"
ARROW = "\u2192"
# Speed numbers wobble from run to run, more than within one measurement's repeats (two
# measurements minutes apart see different load). A timing's change counts only beyond its
# noise: this stated relative threshold, or the spread of the measurements' own repeats where
# the metrics record them (`details["speed"]` holding `<field>_runs`) and it is wider.
TIMING_NOISE = 0.10
UNCHANGED = "unchanged"
WITHIN_NOISE = "within noise"
SPEED_FIELDS = ("prefill_seconds", "decode_tokens_per_s")


@dataclass(frozen=True)
class TaskInfo:
    """How one quality task's headline number reads: its name, direction and unit."""

    label: str
    higher_is_better: bool
    percent: bool  # a fraction in [0, 1] shown as %


TASKS = {
    "ppl": TaskInfo("perplexity", higher_is_better=False, percent=False),
    "humaneval": TaskInfo("pass@1", higher_is_better=True, percent=True),
    "medvqa": TaskInfo("accuracy", higher_is_better=True, percent=True),
    "medvqa2": TaskInfo("accuracy", higher_is_better=True, percent=True),
}


def task_info(task: str) -> TaskInfo:
    """The known task's reading, or a neutral higher-is-better number for an unknown one."""
    return TASKS.get(task, TaskInfo(task, higher_is_better=True, percent=False))


@dataclass(frozen=True)
class Point:
    """The model at one moment of the run: the baseline, or just after a stage."""

    label: str
    metrics: Metrics


def run_points(state: RunState) -> list[Point]:
    """Baseline first, then the model after each completed stage that was kept, in run
    order (a stage that missed its bar is in the table, not on the path)."""
    start = state.baseline or (state.stages[0].before if state.stages else None)
    if start is None:
        return []
    return [Point("baseline", start)] + [Point(s.name, s.after) for s in state.stages if s.kept]


def quality_tasks(state: RunState) -> list[str]:
    """Tasks in the recipe's order, then any others that appear in the measurements."""
    declared = list(state.recipe.get("evaluation", {}).get("tasks", []))
    seen = [task for point in run_points(state) for task in point.metrics.quality]
    return list(dict.fromkeys(declared + seen))


# ---- number formatting -------------------------------------------------------------------


def _signed(value: float, digits: int) -> str:
    text = f"{abs(value):.{digits}f}"
    if float(text) == 0:
        return f"\u00b1{text}"
    return f"+{text}" if value > 0 else f"{MINUS}{text}"


def fmt_quality(task: str, value: float | None) -> str:
    """Perplexity with 2 decimals, fractions as a percentage with 1 decimal."""
    if value is None or not math.isfinite(value):
        return "\u2014" if value is None else str(value)
    return f"{value * 100:.1f}%" if task_info(task).percent else f"{value:.2f}"


def fmt_mb(num_bytes: int | None) -> str:
    """Bytes as MB with enough digits for both tiny test models and multi-GB ones."""
    if not num_bytes:
        return "\u2014"
    mb = num_bytes / 1e6
    digits = 0 if mb >= 100 else 1 if mb >= 10 else 2 if mb >= 0.1 else 3
    return f"{mb:,.{digits}f} MB"


def fmt_latency(seconds: float | None) -> str:
    if seconds is None:
        return "\u2014"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_rate(tokens_per_s: float | None) -> str:
    if not tokens_per_s:
        return "\u2014"
    return f"{tokens_per_s:.1f} tok/s" if tokens_per_s < 100 else f"{tokens_per_s:.0f} tok/s"


def fmt_params(params: dict[str, Any], limit: int = 60) -> tuple[str, ...]:
    """A stage's params as 'key=value' strings, long values shortened."""
    parts = []
    for key, value in params.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if len(text) > limit:
            text = text[: limit - 1] + "\u2026"
        parts.append(f"{key}={text}")
    return tuple(parts)


# ---- cells ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One table cell: the main text, the line under it (the change, or for 'what it did' the
    stage's params), and whether the change is good."""

    main: str
    change: str = ""
    verdict: Verdict = ""
    after: str = ""  # the 'after' half of 'before -> after', for narrow terminals
    parts: tuple[str, ...] = ()  # the items `change` lists (a stage's params), if it lists any

    @property
    def brief(self) -> str:
        return self.after or self.main


def _judge(before: float, after: float, higher_is_better: bool) -> Verdict:
    if after == before:
        return "same"
    return "better" if (after > before) == higher_is_better else "worse"


def relative_spread(runs: list[float]) -> float | None:
    """(largest - smallest) / median of a measurement's repeats; None for fewer than two."""
    values = sorted(v for v in runs if isinstance(v, int | float) and math.isfinite(v))
    if len(values) < 2:
        return None
    median = statistics.median(values)
    return (values[-1] - values[0]) / median if median else None


def timing_noise(before: Metrics, after: Metrics, key: str) -> float:
    """The relative change of speed field `key` that is still noise between two measurements:
    TIMING_NOISE, or the wider spread of their recorded repeats where that is wider."""
    spreads = [relative_spread((m.details.get("speed") or {}).get(f"{key}_runs") or [])
               for m in (before, after)]
    return max([TIMING_NOISE, *(s for s in spreads if s is not None)])


def within_noise(before: Metrics, after: Metrics, key: str) -> bool:
    """Whether speed field `key` moved by no more than its noise (missing values: False)."""
    old, new = getattr(before, key), getattr(after, key)
    if not old or not new:
        return False
    return abs(new - old) / abs(old) <= timing_noise(before, after, key)


def noise_rule() -> str:
    """The noise rule in words, for the report's hints."""
    return (f"speed changes within the measurement's noise count as no change ({TIMING_NOISE:.0%}, "
            f"or the spread of its repeats where that is wider)")


def _relative(before: float, after: float) -> str:
    return _signed((after - before) / before * 100, 1) + "%" if before else ""


def _pair(before: str, after: str) -> str:
    return after if before == after else f"{before} {ARROW} {after}"


def quality_cell(task: str, before: float | None, after: float | None) -> Cell:
    """'before -> after' and the change: in points for %, absolute and relative otherwise."""
    if before is None or after is None or not math.isfinite(before + after):
        return Cell(fmt_quality(task, after))
    if before == after:
        return Cell(fmt_quality(task, after), UNCHANGED, "same")
    info = task_info(task)
    if info.percent:
        change = _signed((after - before) * 100, 1) + " pp"
    else:
        change = f"{_signed(after - before, 2)} ({_relative(before, after)})"
    verdict = _judge(before, after, info.higher_is_better)
    shown = fmt_quality(task, after)
    return Cell(_pair(fmt_quality(task, before), shown), change, verdict, shown)


def _measure_cell(
    before: float | None,
    after: float | None,
    fmt: Callable[[Any], str],
    higher_is_better: bool,
) -> Cell:
    if not before or not after:
        return Cell(fmt(after))
    if before == after:
        return Cell(fmt(after), UNCHANGED, "same")
    verdict = _judge(before, after, higher_is_better)
    return Cell(_pair(fmt(before), fmt(after)), _relative(before, after), verdict, fmt(after))


def _speed_cell(before: Metrics, after: Metrics, key: str, fmt: Callable[[Any], str],
                higher_is_better: bool) -> Cell:
    """A timing's cell; a change within the measurement's noise shows as no change."""
    if within_noise(before, after, key) and getattr(before, key) != getattr(after, key):
        return Cell(fmt(getattr(after, key)), WITHIN_NOISE, "same")
    return _measure_cell(getattr(before, key), getattr(after, key), fmt, higher_is_better)


def weights_cell(before: Metrics, after: Metrics) -> Cell:
    return _measure_cell(before.weight_bytes, after.weight_bytes, fmt_mb, False)


def prefill_cell(before: Metrics, after: Metrics) -> Cell:
    return _speed_cell(before, after, "prefill_seconds", fmt_latency, False)


def decode_cell(before: Metrics, after: Metrics) -> Cell:
    return _speed_cell(before, after, "decode_tokens_per_s", fmt_rate, True)


# ---- rows ----------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the stage-by-stage table (the first is the baseline)."""

    name: str
    did: str  # the registered stage it ran (or how the baseline was taken)
    params: tuple[str, ...] = ()
    quality: dict[str, Cell] = field(default_factory=dict)
    weights: Cell = Cell("\u2014")
    prefill: Cell = Cell("\u2014")
    decode: Cell = Cell("\u2014")
    seconds: str = ""
    notes: str = ""


def _compare(name: str, did: str, tasks: list[str], before: Metrics, after: Metrics) -> Row:
    return Row(
        name=name,
        did=did,
        params=(),
        quality={t: quality_cell(t, before.quality.get(t), after.quality.get(t)) for t in tasks},
        weights=weights_cell(before, after),
        prefill=prefill_cell(before, after),
        decode=decode_cell(before, after),
    )


def baseline_row(state: RunState, tasks: list[str]) -> Row | None:
    points = run_points(state)
    if not points:
        return None
    start = points[0].metrics
    return Row(
        name="baseline",
        did=f"measured {state.recipe.get('model', 'the model')} as loaded",
        quality={t: Cell(fmt_quality(t, start.quality.get(t))) for t in tasks},
        weights=Cell(fmt_mb(start.weight_bytes)),
        prefill=Cell(fmt_latency(start.prefill_seconds)),
        decode=Cell(fmt_rate(start.decode_tokens_per_s)),
    )


def stage_row(stage: StageResult, tasks: list[str]) -> Row:
    row = _compare(stage.name, stage.stage, tasks, stage.before, stage.after)
    row.params = fmt_params(stage.params)
    row.seconds = fmt_seconds(stage.seconds)
    row.notes = stage.notes if stage.kept else \
        f"missed its bar ({stage.missed_bar}); set aside. {stage.notes}".strip()
    return row


def table_rows(state: RunState) -> list[Row]:
    """The baseline row, then one row per completed stage."""
    tasks = quality_tasks(state)
    first = baseline_row(state, tasks)
    return ([first] if first else []) + [stage_row(s, tasks) for s in state.stages]


def overall_row(state: RunState) -> Row | None:
    """Baseline against the latest model: the run's net effect (None before any stage)."""
    if not state.stages:
        return None
    points = run_points(state)
    tasks = quality_tasks(state)
    row = _compare("overall", "baseline to final", tasks, points[0].metrics, points[-1].metrics)
    row.seconds = fmt_seconds(sum(s.seconds for s in state.stages))
    return row


def pending_stages(state: RunState) -> list[str]:
    """Labels of recipe stages that have not completed (an interrupted or partial run)."""
    done = state.completed()
    labels = [s.get("name") or s.get("stage", "?") for s in state.recipe.get("stages", [])]
    return [label for label in labels if label not in done]


def column_titles(tasks: list[str], short: bool = False) -> list[str]:
    """Header text for the table's columns, in order ('perplexity (ppl)', or 'perplexity')."""
    labels = [task_info(t).label for t in tasks]
    quality = labels if short else [
        f"{label} ({t})" if label != t else t for t, label in zip(tasks, labels, strict=True)]
    return ["Stage", "What it did", *quality, "Weights", "Prefill", "Decode", "Time", "Notes"]


def row_cells(row: Row, tasks: list[str]) -> list[Cell]:
    """The row's cells in `column_titles` order."""
    return [
        Cell(row.name), Cell(row.did, ", ".join(row.params), parts=row.params),
        *(row.quality.get(t, Cell("\u2014")) for t in tasks),
        row.weights, row.prefill, row.decode, Cell(row.seconds), Cell(row.notes),
    ]


@dataclass
class Table:
    """Titles and cells of the stage-by-stage table, without columns that hold nothing."""

    titles: list[str]
    rows: list[list[Cell]]
    numeric: list[bool]  # right-aligned number columns


def stage_table(state: RunState, *, with_overall: bool = False, short: bool = False) -> Table:
    """The table both outputs show, optionally ending with the baseline-to-final row; a column
    with no value in any row (e.g. Notes, or speed when it was not measured) is left out."""
    tasks = quality_tasks(state)
    titles = column_titles(tasks, short)
    rows = table_rows(state)
    overall = overall_row(state) if with_overall else None
    cells = [row_cells(row, tasks) for row in rows + ([overall] if overall else [])]
    keep = [i for i in range(len(titles))
            if i < 2 or any(row[i].main not in ("", "\u2014") for row in cells)]
    last = len(titles) - 1
    return Table(
        titles=[titles[i] for i in keep],
        rows=[[row[i] for i in keep] for row in cells],
        numeric=[2 <= i < last for i in keep],
    )


@dataclass
class BreakdownTable:
    """Accuracy per question type at every point of the run, next to the majority baseline."""

    task: str
    titles: list[str]
    rows: list[list[str]]


def per_type_tables(state: RunState) -> list[BreakdownTable]:
    """One table per task whose records carry a `per_type` breakdown (e.g. medvqa)."""
    points = run_points(state)
    tables = []
    for task in quality_tasks(state):
        records = [p.metrics.details.get(task) or {} for p in points]
        if not any(r.get("per_type") for r in records):
            continue
        majority = next((r.get("majority_baseline") for r in records
                         if r.get("majority_baseline")), {})
        types = sorted({t for r in records for t in r.get("per_type", {})})
        titles = ["question type", "majority answer"] + [p.label for p in points]
        rows = []
        for qtype in [*types, "all"]:
            values = [r.get("per_type", {}).get(qtype) if qtype != "all" else r.get("accuracy")
                      for r in records]
            base = majority.get("overall" if qtype == "all" else qtype)
            rows.append([qtype, _percent(base)] + [_percent(v) for v in values])
        tables.append(BreakdownTable(task, titles, rows))
    return tables


def _percent(value: float | None) -> str:
    return "\u2014" if value is None else f"{100 * value:.1f}%"

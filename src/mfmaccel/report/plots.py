"""The report's figures as PNG bytes: quality against size, quality against latency, and
the curves stages recorded (e.g. fine-tuning loss).

Figures are built on `matplotlib.figure.Figure` with the Agg canvas directly, never through
pyplot, so making a report neither needs a display nor touches the global backend.
Each function returns None when its data is missing, and the report leaves that plot out.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Annotation, Text
from matplotlib.ticker import MaxNLocator, PercentFormatter
from matplotlib.transforms import Bbox

from mfmaccel.records import StageResult
from mfmaccel.report.rows import Point, task_info, within_noise

DPI = 200  # rendered at 2x; the HTML shows it at half its pixel size, so it stays crisp
PARETO = "#1f6feb"
OTHER = "#8b949e"
PATH = "#c9d1d9"
# Label offsets (points) tried in turn until the label overlaps nothing already placed.
OFFSETS = [(7, 7), (7, -14), (-7, 7), (-7, -14), (7, 20), (-7, 20), (7, -27), (-7, -27)]
# With a leader line a label may sit further out: rings of offsets, nearest first.
LEADER_OFFSETS = OFFSETS + [(round(r * dx), round(r * dy)) for r in (2.2, 3.6)
                            for dx, dy in ((7, -14), (7, 7), (-7, -14), (-7, 7), (0, -20),
                                           (0, 14))]
PHASE = re.compile(r"^(phase|round|stage|step)[ _-]?\d+[a-z]?$", re.IGNORECASE)


def _figure(width: float, height: float, rows: int, cols: int) -> tuple[Figure, list[list[Axes]]]:
    """A figure on the Agg canvas with a grid of quietly styled axes."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(rows, cols, squeeze=False)
    for ax in grid.flatten():
        ax.grid(True, color="#eaeef2", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.tick_params(labelsize=9)
    return fig, [list(row) for row in grid]


def _png(fig: Figure) -> bytes:
    """The figure as PNG bytes, without the matplotlib metadata (it carries a URL)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    return buffer.getvalue()


# ---- Pareto --------------------------------------------------------------------------------


def pareto_mask(xs: Sequence[float], ys: Sequence[float], higher_is_better: bool) -> list[bool]:
    """True for points no other point beats: x no larger and y no worse, one strictly."""
    sign = 1 if higher_is_better else -1

    def beats(j: int, i: int) -> bool:
        no_worse = xs[j] <= xs[i] and sign * ys[j] >= sign * ys[i]
        return no_worse and (xs[j] < xs[i] or sign * ys[j] > sign * ys[i])

    return [not any(beats(j, i) for j in range(len(xs)) if j != i) for i in range(len(xs))]


# ---- one trade-off panel ------------------------------------------------------------------


@dataclass(frozen=True)
class Spot:
    """One plotted position; points of the run that land on the same spot share it."""

    x: float
    y: float
    labels: tuple[str, ...]


def _merge_coincident(xs: list[float], ys: list[float], labels: list[str]) -> list[Spot]:
    """Stages that change nothing (e.g. `evaluate`) leave identical points: label them once."""
    spots: dict[tuple[float, float], list[str]] = {}
    for x, y, label in zip(xs, ys, labels, strict=True):
        spots.setdefault((round(x, 12), round(y, 12)), []).append(label)
    return [Spot(x, y, tuple(names)) for (x, y), names in spots.items()]


def _collisions(box: Bbox, obstacles: list[Bbox], inside: Bbox) -> int:
    """How badly a label box fits: leaving the axes counts most, then each thing it covers."""
    outside = box.x0 < inside.x0 or box.x1 > inside.x1 or box.y0 < inside.y0 or box.y1 > inside.y1
    return 100 * outside + sum(box.overlaps(other) for other in obstacles)


def _label_text(spot: Spot) -> str:
    text = ", ".join(spot.labels)
    return text if len(text) <= 40 else f"{spot.labels[0]} (+{len(spot.labels) - 1} more)"


def _place_label(ax: Axes, spot: Spot, obstacles: list[Bbox], leader: bool = False) -> None:
    """Annotate a spot at the offset where the text covers the least (ideally nothing); with
    `leader`, a thin line ties the text to its point (for crowded plots)."""
    renderer = ax.figure.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    best: tuple[int, Annotation, Bbox] | None = None
    line = {"arrowstyle": "-", "color": OTHER, "lw": 0.6, "shrinkA": 1, "shrinkB": 4}
    for dx, dy in LEADER_OFFSETS if leader else OFFSETS:
        note = ax.annotate(_label_text(spot), (spot.x, spot.y), xytext=(dx, dy),
                           textcoords="offset points",
                           ha="left" if dx > 0 else "right" if dx < 0 else "center",
                           fontsize=8.5, color="#24292f", zorder=5,
                           arrowprops=line if leader else None)
        note.update_positions(renderer)
        box = Text.get_window_extent(note, renderer).expanded(1.04, 1.1)  # the text alone
        score = _collisions(box, obstacles, inside)
        if leader:
            score += _leader_crossings(ax, spot, (dx, dy), obstacles)
        if best is None or score < best[0]:
            if best is not None:
                best[1].remove()
            best = (score, note, box)
        else:
            note.remove()
        if score == 0:
            break
    if best is not None:
        obstacles.append(best[2])


def _leader_crossings(ax: Axes, spot: Spot, offset: tuple[float, float],
                      obstacles: list[Bbox], step: float = 3.0) -> int:
    """How many obstacles a leader from the spot to its label at `offset` (points) passes
    through, its own marker left out."""
    x0, y0 = ax.transData.transform((spot.x, spot.y))
    scale = ax.figure.dpi / 72
    dx, dy = offset[0] * scale, offset[1] * scale
    length = math.hypot(dx, dy)
    hit = set()
    for k in range(math.ceil(length / step) + 1):
        t = min(1.0, k * step / length)
        if t * length < 8:
            continue
        x, y = x0 + dx * t, y0 + dy * t
        hit.update(i for i, b in enumerate(obstacles) if b.contains(x, y))
    return len(hit)


def _segment_boxes(ax: Axes, points: list[tuple[float, float]], step: float = 3.0) -> list[Bbox]:
    """Small boxes every `step` pixels along the lines between consecutive points, so labels
    keep off them."""
    if len(points) < 2:
        return []
    pixels = ax.transData.transform(points)
    boxes = []
    for (x0, y0), (x1, y1) in zip(pixels[:-1], pixels[1:], strict=True):
        samples = max(1, math.ceil(math.hypot(x1 - x0, y1 - y0) / step))
        for k in range(samples + 1):
            x, y = x0 + (x1 - x0) * k / samples, y0 + (y1 - y0) * k / samples
            boxes.append(Bbox.from_extents(x - 2, y - 2, x + 2, y + 2))
    return boxes


def _draw_path(ax: Axes, xs: list[float], ys: list[float]) -> None:
    """Arrows from each point to the next, so the run's direction of travel is visible."""
    for i in range(len(xs) - 1):
        if (xs[i], ys[i]) == (xs[i + 1], ys[i + 1]):
            continue
        ax.annotate("", (xs[i + 1], ys[i + 1]), xytext=(xs[i], ys[i]),
                    arrowprops={"arrowstyle": "-|>", "color": PATH, "lw": 1.2,
                                "shrinkA": 5, "shrinkB": 5})


@dataclass
class Panel:
    """A drawn trade-off panel whose point labels are still to place."""

    ax: Axes
    spots: list[Spot]
    lines: list[list[tuple[float, float]]]  # the run's path and the Pareto front
    leaders: bool = False  # tie each label to its point with a thin line


def _tradeoff_panel(
    ax: Axes, xs: list[float], ys: list[float], labels: list[str], higher_is_better: bool
) -> Panel:
    """Points of the run, the path between them, and the Pareto front in colour; labels go
    on last, once the layout is final (see `_label_points`)."""
    mask = pareto_mask(xs, ys, higher_is_better)
    _draw_path(ax, xs, ys)
    front = sorted((x, y) for x, y, keep in zip(xs, ys, mask, strict=True) if keep)
    ax.plot([p[0] for p in front], [p[1] for p in front], color=PARETO, lw=1.6, ls="--",
            zorder=3)
    for x, y, keep in zip(xs, ys, mask, strict=True):
        ax.plot([x], [y], "o", ms=7, zorder=4, color=PARETO if keep else "white",
                markeredgecolor=PARETO if keep else OTHER, markeredgewidth=1.5)
    ax.margins(x=0.22, y=0.22)
    return Panel(ax, _merge_coincident(xs, ys, labels), [list(zip(xs, ys, strict=True)), front])


def _label_points(fig: Figure, panels: list[Panel]) -> None:
    """Lay the figure out, freeze it, then label each point where the text covers least."""
    fig.get_layout_engine().execute(fig)
    fig.set_layout_engine("none")
    for panel in panels:
        ax = panel.ax
        ax.get_xlim()  # settles autoscaling, so data-to-pixel transforms are final
        obstacles = [b for line in panel.lines for b in _segment_boxes(ax, line)]
        for spot in panel.spots:
            x, y = ax.transData.transform((spot.x, spot.y))
            obstacles.append(Bbox.from_extents(x - 6, y - 6, x + 6, y + 6))
        for spot in sorted(panel.spots, key=lambda s: (s.x, s.y)):
            _place_label(ax, spot, obstacles, panel.leaders)


def _legend(fig: Figure) -> None:
    handles = [
        Line2D([], [], color=PARETO, marker="o", ls="--", label="Pareto-optimal"),
        Line2D([], [], color="white", marker="o", markeredgecolor=OTHER, markeredgewidth=1.5,
               ls="", label="dominated"),
        Line2D([], [], color=PATH, lw=1.2, marker=">", label="run order"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False, fontsize=9)


def _quality_axis(ax: Axes, task: str) -> None:
    info = task_info(task)
    direction = "higher" if info.higher_is_better else "lower"
    ax.set_ylabel(f"{info.label}  ({direction} is better)", fontsize=9.5)
    if info.percent:
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=1))


def _series(
    points: list[Point], task: str, x_of: Callable[[Point], float | None]
) -> tuple[list[float], list[float], list[str]]:
    """The (x, quality, label) of each point that has both numbers."""
    xs = _steady(points, x_of) if x_of in SPEED_KEYS else [x_of(p) for p in points]
    rows = [(x, p.metrics.quality.get(task), p.label) for x, p in zip(xs, points, strict=True)]
    rows = [r for r in rows if r[0] is not None and r[1] is not None and math.isfinite(r[1])]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def _weight_mb(point: Point) -> float | None:
    return point.metrics.weight_bytes / 1e6 if point.metrics.weight_bytes else None


def _prefill_ms(point: Point) -> float | None:
    seconds = point.metrics.prefill_seconds
    return seconds * 1000 if seconds else None


def _ms_per_token(point: Point) -> float | None:
    rate = point.metrics.decode_tokens_per_s
    return 1000 / rate if rate else None


SPEED_KEYS = {_prefill_ms: "prefill_seconds", _ms_per_token: "decode_tokens_per_s"}


def _steady(points: list[Point], x_of: Callable[[Point], float | None]) -> list[float | None]:
    """Each point's timing, or the one drawn for the last point that moved it beyond the noise
    (`rows.within_noise`): a timing that only wobbled is drawn as unchanged."""
    key = SPEED_KEYS[x_of]
    drawn: list[float | None] = []
    anchor: tuple[Point, float] | None = None
    for point in points:
        x = x_of(point)
        if x is not None and anchor is not None and within_noise(anchor[0].metrics,
                                                                 point.metrics, key):
            x = anchor[1]
        elif x is not None:
            anchor = (point, x)
        drawn.append(x)
    return drawn


# ---- the figures ---------------------------------------------------------------------------


def quality_vs_size(points: list[Point], tasks: list[str]) -> bytes | None:
    """One panel per quality task: quality against weight bytes (MB)."""
    panels = [(t, *_series(points, t, _weight_mb)) for t in tasks]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    fig, grid = _figure(max(5.5, 5.2 * len(panels)), 4.3, 1, len(panels))
    pending = []
    for ax, (task, xs, ys, labels) in zip(grid[0], panels, strict=True):
        pending.append(_tradeoff_panel(ax, xs, ys, labels, task_info(task).higher_is_better))
        _quality_axis(ax, task)
        ax.set_xlabel("weights (MB, smaller is better)", fontsize=9.5)
        ax.set_title(f"{task}: quality vs size", fontsize=10.5, loc="left")
    _legend(fig)
    _label_points(fig, pending)
    return _png(fig)


LATENCY = [
    ("prefill latency (ms, batch 1)", _prefill_ms),
    ("decode time per token (ms, batch 1)", _ms_per_token),
]


def quality_vs_latency(points: list[Point], tasks: list[str]) -> bytes | None:
    """A row per task, a column per latency measure that was taken (prefill, decode)."""
    columns = [(name, x_of) for name, x_of in LATENCY
               if any(_series(points, t, x_of)[0] for t in tasks)]
    rows = [t for t in tasks if any(_series(points, t, x_of)[0] for _, x_of in columns)]
    if not columns or not rows:
        return None
    width, height = max(5.5, 5.2 * len(columns)), 3.9 * len(rows) + 0.4
    fig, grid = _figure(width, height, len(rows), len(columns))
    pending = []
    for r, task in enumerate(rows):
        for c, (name, x_of) in enumerate(columns):
            ax = grid[r][c]
            xs, ys, labels = _series(points, task, x_of)
            if not xs:
                ax.set_axis_off()
                continue
            pending.append(
                _tradeoff_panel(ax, xs, ys, labels, task_info(task).higher_is_better)
            )
            _quality_axis(ax, task)
            ax.set_xlabel(f"{name}, lower is better", fontsize=9.5)
            ax.set_title(f"{task}: quality vs {name.split(' (')[0]}", fontsize=10.5, loc="left")
    _legend(fig)
    _label_points(fig, pending)
    return _png(fig)


@dataclass(frozen=True)
class CurveGroup:
    """Curves that share a y-axis: one stage's series of the same metric (e.g. its losses)."""

    stage: str
    metric: str
    series: tuple[tuple[str, tuple[float, ...]], ...]  # (name, values)

    @property
    def title(self) -> str:
        """The metric, with the series name when there is only one (e.g. 'val/accuracy')."""
        name = self.series[0][0]
        if len(self.series) == 1 and name != self.metric:
            return f"{name}/{self.metric}"
        return self.metric

    @property
    def phases(self) -> bool:
        """Series named phase1, phase2, ... continue one another, so they are drawn end to end."""
        return len(self.series) > 1 and all(PHASE.match(name) for name, _ in self.series)


def curve_groups(stages: list[StageResult]) -> list[CurveGroup]:
    """Group 'prefix/metric' curves by stage and metric; a key without '/' is its own metric."""
    groups: list[CurveGroup] = []
    for stage in stages:
        by_metric: dict[str, list[tuple[str, tuple[float, ...]]]] = {}
        for key, values in stage.curves.items():
            if not values:
                continue
            prefix, _, metric = key.rpartition("/")
            by_metric.setdefault(metric, []).append((prefix or metric, tuple(values)))
        groups += [CurveGroup(stage.name, m, tuple(s)) for m, s in by_metric.items()]
    return groups


def _draw_group(ax: Axes, group: CurveGroup) -> None:
    start = 0
    for name, values in group.series:
        steps = range(start, start + len(values))
        marker = "o" if len(values) <= 30 else None
        ax.plot(list(steps), list(values), marker=marker, ms=3.5, lw=1.6, label=name)
        if group.phases:
            if start:
                ax.axvline(start - 0.5, color="#d0d7de", lw=1, ls=":")
            start += len(values)
    finite = [v for _, values in group.series for v in values if math.isfinite(v)]
    if "acc" in group.metric.lower() and finite and min(finite) >= 0 and max(finite) <= 1:
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{group.stage}: {group.title}", fontsize=10.5, loc="left")
    if group.metric == "block_kl":  # the quantize stage's per-block sensitivity
        ax.set_yscale("log")
        ax.set_xlabel("transformer block (the head last)", fontsize=9.5)
    else:
        ax.set_xlabel("step" + (" (phases end to end)" if group.phases else ""), fontsize=9.5)
    ax.set_ylabel(group.metric, fontsize=9.5)
    if len(group.series) > 1:
        ax.legend(fontsize=8.5, frameon=False)


def stage_curves(stages: list[StageResult], columns: int = 2) -> bytes | None:
    """Every curve a stage recorded (losses per phase, validation accuracy, ...)."""
    groups = curve_groups(stages)
    if not groups:
        return None
    cols = min(columns, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig, grid = _figure(max(5.5, 5.6 * cols), 3.6 * rows, rows, cols)
    axes = [ax for row in grid for ax in row]
    for ax, group in zip(axes, groups, strict=False):
        _draw_group(ax, group)
    for ax in axes[len(groups):]:
        ax.set_axis_off()
    return _png(fig)


def compression_front(record: dict) -> bytes | None:
    """The quantize stage's search: the mixed-precision front (bytes against the KL its
    sensitivity table predicts) with the uniform baselines drawn on it (each a measured
    whole-network KL) and the point the stage applied."""
    front, fp16 = record.get("front") or [], record.get("fp16_bytes")
    if not front or not fp16:
        return None
    fig, grid = _figure(6.4, 3.9, 1, 1)
    ax = grid[0][0]
    xs = [p["bytes"] / fp16 for p in front]
    ys = [max(p["predicted_kl"], 1e-6) for p in front]
    ax.plot(xs, ys, marker="o", ms=4, lw=1.6, color=PARETO, label="mixed precision (predicted)")
    for point in record.get("uniform") or []:
        x, y = point["bytes"] / fp16, max(point["kl"], 1e-6)
        ax.plot([x], [y], marker="s", ms=6, color="#cf222e", ls="none")
        ax.annotate(point["spec"], (x, y), xytext=(6, 4), textcoords="offset points", fontsize=8)
    ax.plot([], [], marker="s", ms=6, color="#cf222e", ls="none",
            label="uniform (measured, whole network)")
    chosen = record.get("chosen") or {}
    if chosen:
        ax.plot([chosen["bytes"] / fp16], [max(chosen["predicted_kl"], 1e-6)], marker="*",
                ms=13, color="#bf8700", ls="none", label="applied")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
    ax.set_xlabel("whole-model bytes, share of FP16", fontsize=9.5)
    ax.set_ylabel("KL to full precision (nats/token)", fontsize=9.5)
    ax.set_title(f"quantize: bytes vs quality ({record.get('model', '')})", fontsize=10.5,
                 loc="left")
    ax.legend(fontsize=8.5, frameon=False)
    return _png(fig)

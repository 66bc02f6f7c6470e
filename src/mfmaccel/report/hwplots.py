"""The accelerator's figures as PNG bytes: the roofline of one simulation and the Pareto front
of a design-space exploration (records of `hw.simulate` and `hw.dse`, as dicts)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mfmaccel.report.plots import OTHER, PARETO, Panel, Spot, _figure, _label_points, _png

BOUND_COLOURS = {"compute": PARETO, "bandwidth": "#d1242f"}
CLOSE = 0.04  # points this close (relative, on both axes) share one marker's label


@dataclass(frozen=True)
class RooflinePoint:
    """One kind of GEMM where the roofline draws it, and the roof above it."""

    name: str
    intensity: float  # MACs per off-chip byte: the x of the point
    attained_gmacs: float  # the y of the point
    bound: str  # "bandwidth" left of the ridge, "compute" at or right of it


def bound_at(intensity: float, ridge: float) -> str:
    """Which roof is above a point at `intensity`: the link's slope left of the ridge, the
    array's peak from it on. The plot's colour and the point's position cannot disagree."""
    return "bandwidth" if intensity < ridge else "compute"


def ridge_point(simulation: dict) -> float:
    """MACs per off-chip byte where the bandwidth slope meets the peak: peak / bandwidth."""
    return simulation["peak_gmacs"] / simulation["bandwidth_gbs"]


def _by_role(simulation: dict) -> list[dict]:
    """GEMMs that moved off-chip bytes, summed per role (projection, ffn, ...)."""
    roles: dict[str, dict] = {}
    for op in simulation.get("ops", []):
        if op["unit"] != "gemm" or not op["dram_bytes"]:
            continue
        total = roles.setdefault(op["name"], {"name": op["name"], "macs": 0, "dram_bytes": 0.0,
                                              "cycles": 0})
        for key in ("macs", "dram_bytes", "cycles"):
            total[key] += op[key]
    return sorted(roles.values(), key=lambda r: r["macs"] / r["dram_bytes"])


def roofline_points(simulation: dict) -> list[RooflinePoint]:
    """Each kind of GEMM at its MACs per off-chip byte and attained GMAC/s, classed by the
    roof it sits under."""
    clock_hz, ridge = simulation["clock_mhz"] * 1e6, ridge_point(simulation)
    points = []
    for role in _by_role(simulation):
        intensity = role["macs"] / role["dram_bytes"]
        attained = role["macs"] / (role["cycles"] / clock_hz) / 1e9
        points.append(RooflinePoint(role["name"], intensity, attained, bound_at(intensity, ridge)))
    return points


def _close(a: RooflinePoint, b: RooflinePoint) -> bool:
    return (abs(math.log(a.intensity / b.intensity)) < CLOSE
            and abs(math.log(a.attained_gmacs / b.attained_gmacs)) < CLOSE)


def label_spots(points: list[RooflinePoint]) -> list[Spot]:
    """One label per cluster of points whose markers overlap (e.g. attention's two GEMMs),
    at the first point of the cluster."""
    clusters: list[list[RooflinePoint]] = []
    for point in points:
        cluster = next((c for c in clusters if _close(c[0], point)), None)
        if cluster is None:
            clusters.append([point])
        else:
            cluster.append(point)
    return [Spot(c[0].intensity, c[0].attained_gmacs, (_joined([p.name for p in c]),))
            for c in clusters]


def _joined(names: list[str]) -> str:
    """'attention-score', 'attention-context' -> 'attention (score, context)'."""
    stems = {name.rpartition("-")[0] for name in names}
    if len(names) > 1 and len(stems) == 1 and "" not in stems:
        stem = stems.pop()
        return f"{stem} ({', '.join(name[len(stem) + 1:] for name in names)})"
    return ", ".join(names)


def roofline(simulation: dict) -> bytes | None:
    """The roofline figure (`roofline_figure`) as PNG bytes; None without GEMMs."""
    fig = roofline_figure(simulation)
    return None if fig is None else _png(fig)


def roofline_figure(simulation: dict) -> Figure | None:
    """Attained MAC rate of each kind of GEMM against its MACs per off-chip byte, under the
    roofs of the array's peak and the link's bandwidth; each point is coloured by the roof
    above it and labelled beside it."""
    points = roofline_points(simulation)
    if not points:
        return None
    fig, [[ax]] = _figure(6.4, 4.0, 1, 1)
    peak, bandwidth = simulation["peak_gmacs"], simulation["bandwidth_gbs"]
    ridge = ridge_point(simulation)
    xs = [p.intensity for p in points]
    low, high = min(xs + [ridge]) / 2, max(xs + [ridge]) * 2
    roof = [(low, bandwidth * low), (ridge, peak), (high, peak)]
    ax.plot([x for x, _ in roof], [y for _, y in roof], color="#57606a", linewidth=1.2)
    ax.axvline(ridge, color="#d0d7de", linewidth=1, linestyle=":", zorder=1)
    for point in points:
        ax.scatter([point.intensity], [point.attained_gmacs], s=28, zorder=3,
                   color=BOUND_COLOURS[point.bound])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"MACs per off-chip byte (ridge at {ridge:.3g})", fontsize=9)
    ax.set_ylabel("attained GMAC/s", fontsize=9)
    ax.set_title(f"{simulation['model']} on {simulation['arch']}", fontsize=10)
    ax.legend(handles=[Line2D([], [], marker="o", linestyle="", color=c, label=f"{b}-bound")
                       for b, c in BOUND_COLOURS.items()], fontsize=8, frameon=False,
              loc="lower right")
    ax.margins(x=0.1, y=0.25)
    _label_points(fig, [Panel(ax, label_spots(points), [roof], leaders=True)])
    return fig


def dse_front(exploration: dict) -> bytes | None:
    """Every design point (grey) and the Pareto front (blue), in three pairwise views."""
    points, front = exploration.get("points", []), exploration.get("front", [])
    if not points:
        return None
    views = [("latency_ms", "energy_mj"), ("latency_ms", "area_mm2"), ("energy_mj", "area_mm2")]
    fig, [axes] = _figure(11, 3.6, 1, 3)
    labels = {"latency_ms": "latency (ms)", "energy_mj": "energy (mJ)", "area_mm2": "area (mm²)"}
    for ax, (x, y) in zip(axes, views, strict=True):
        ax.scatter([p[x] for p in points], [p[y] for p in points], s=4, color=OTHER, alpha=0.4)
        ax.scatter([p[x] for p in front], [p[y] for p in front], s=10, color=PARETO)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(labels[x], fontsize=9)
        ax.set_ylabel(labels[y], fontsize=9)
    fig.suptitle(f"{exploration['workload']}: {len(front)} Pareto-optimal of "
                 f"{len(points)} designs", fontsize=10)
    return _png(fig)

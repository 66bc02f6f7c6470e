"""The accelerator's figures as PNG bytes: the roofline of one simulation and the Pareto front
of a design-space exploration (records of `hw.simulate` and `hw.dse`, as dicts)."""

from __future__ import annotations

from matplotlib.lines import Line2D

from mfmaccel.report.plots import OTHER, PARETO, _figure, _png

BOUND_COLOURS = {"compute": PARETO, "bandwidth": "#d1242f"}


def _by_role(simulation: dict) -> list[dict]:
    """GEMMs that moved off-chip bytes, summed per role (projection, ffn, ...)."""
    roles: dict[str, dict] = {}
    for op in simulation.get("ops", []):
        if op["unit"] != "gemm" or not op["dram_bytes"]:
            continue
        total = roles.setdefault(op["name"], {"name": op["name"], "macs": 0, "dram_bytes": 0.0,
                                              "cycles": 0, "compute_cycles": 0})
        for key in ("macs", "dram_bytes", "cycles", "compute_cycles"):
            total[key] += op[key]
    for total in roles.values():
        total["bound"] = "compute" if total["compute_cycles"] >= total["cycles"] else "bandwidth"
    return sorted(roles.values(), key=lambda r: r["macs"] / r["dram_bytes"])


def roofline(simulation: dict) -> bytes | None:
    """Attained MAC rate of each kind of GEMM against its MACs per off-chip byte, under the
    roofs of the array's peak and the link's bandwidth."""
    gemms = _by_role(simulation)
    if not gemms:
        return None
    fig, [[ax]] = _figure(6.4, 4.0, 1, 1)
    clock_hz = simulation["clock_mhz"] * 1e6
    peak, bandwidth = simulation["peak_gmacs"], simulation["bandwidth_gbs"]
    ridge = peak / bandwidth
    xs = [op["macs"] / op["dram_bytes"] for op in gemms]
    low, high = min(xs + [ridge]) / 2, max(xs + [ridge]) * 2
    ax.plot([low, ridge, high], [bandwidth * low, peak, peak], color="#57606a", linewidth=1.2)
    placed: list[tuple[float, float]] = []
    for op, x in zip(gemms, xs, strict=True):
        attained = op["macs"] / (op["cycles"] / clock_hz) / 1e9
        ax.scatter([x], [attained], s=28, color=BOUND_COLOURS[op["bound"]], zorder=3)
        near = sum(abs(x / px - 1) < 0.3 and abs(attained / py - 1) < 0.3 for px, py in placed)
        ax.annotate(op["name"], (x, attained), xytext=(5, -10 - 11 * near),
                    textcoords="offset points", fontsize=7, color="#57606a")
        placed.append((x, attained))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("MACs per off-chip byte", fontsize=9)
    ax.set_ylabel("attained GMAC/s", fontsize=9)
    ax.set_title(f"{simulation['model']} on {simulation['arch']}", fontsize=10)
    ax.legend(handles=[Line2D([], [], marker="o", linestyle="", color=c, label=f"{b}-bound")
                       for b, c in BOUND_COLOURS.items()], fontsize=8, frameon=False)
    return _png(fig)


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

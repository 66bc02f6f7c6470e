"""The co-optimisation's figure: accuracy against cost for every knob setting tried, the
feasible front marked and the unchanged model as the reference (`mfmaccel cooptimize`)."""

from __future__ import annotations

from pathlib import Path

from mfmaccel.fileio import atomic_write_bytes
from mfmaccel.report.plots import OTHER, PARETO, _figure, _png

COSTS = {"prefill_ms": "CPU prefill (ms)", "gflops": "prefill GFLOPs",
         "latency_ms": "accelerator latency (ms)", "energy_mj": "accelerator energy (mJ)"}


def _cost(trial: dict, name: str) -> float:
    return trial[name] if name in trial else trial["accelerator"][name]


def cooptimization_front(record: dict) -> bytes | None:
    """Accuracy against each cost objective (one panel each): trials grey, front blue, the
    unchanged model black, the chosen point ringed."""
    trials = record.get("trials", [])
    if not trials:
        return None
    costs = [name for name in record["objectives"] if name != "accuracy"]
    fig, [axes] = _figure(3.7 * len(costs), 3.4, 1, len(costs))
    front = set(record["front"])
    for ax, name in zip(axes, costs, strict=True):
        ax.scatter([_cost(t, name) for t in trials], [t["accuracy"] for t in trials], s=8,
                   color=OTHER, alpha=0.6)
        ax.scatter([_cost(trials[i], name) for i in front],
                   [trials[i]["accuracy"] for i in front], s=14, color=PARETO)
        ax.scatter([_cost(trials[0], name)], [trials[0]["accuracy"]], s=20, color="black",
                   label="unchanged")
        chosen = trials[record["chosen_trial"]]
        ax.scatter([_cost(chosen, name)], [chosen["accuracy"]], s=80, facecolors="none",
                   edgecolors=PARETO, label="chosen")
        ax.set_xlabel(COSTS[name], fontsize=9)
        ax.set_ylabel("accuracy (val)", fontsize=9)
    axes[0].legend(fontsize=8, frameon=False)
    fig.suptitle(f"{record['model']}: {len(front)} on the front of {len(trials)} settings "
                 f"(accuracy drop <= {record['max_drop']:g})", fontsize=10)
    return _png(fig)


def write_cooptimization_front(record: dict, path: Path) -> None:
    png = cooptimization_front(record)
    if png:
        atomic_write_bytes(path, png)

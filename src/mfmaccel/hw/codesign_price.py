"""Pricing bit assignments on every design of a sweep, and the fronts over them.

Each assignment turns into per-layer weight bits on the workload (`dse.with_layer_bits`), is
scheduled once, and is priced on every design of the `DesignSpace` (its `weight_bits` values
are not swept here: the assignment gives the bits). The result is a cost table, assignment x
design x (latency ms, energy mJ, area mm², on-chip power mW), NaN where a design's buffers
cannot hold one array tile. The designs are priced in index ranges (`dse.sweep_ranges`) on an
`mfmaccel.parallel.Executor`, as `dse.explore` runs them. Fronts are taken with numpy: a point
joins when no kept point is at least as good on every objective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from mfmaccel.errors import UserInputError
from mfmaccel.hw.dse import (
    Constraints,
    DesignSpace,
    design,
    price,
    sweep_ranges,
    with_layer_bits,
)
from mfmaccel.hw.fusion import Unit, schedule_units
from mfmaccel.hw.ops import Workload
from mfmaccel.parallel import IN_PROCESS, Executor

COSTS = ("latency_ms", "energy_mj", "area_mm2", "power_mw")


def price_table(workload: Workload, bits: list[dict[str, int]], space: DesignSpace, *,
                executor: Executor = IN_PROCESS,
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(assignments, designs, 4) costs of the workload at each per-layer `bits` (module path
    -> bits) on every design of `space`, priced on `executor`."""
    units = [schedule_units(with_layer_bits(workload, b)) for b in bits]
    space = replace(space, weight_bits=(space.weight_bits[0],))
    ranges = sweep_ranges(space.size)
    parts = executor.map(_price_range, [(units, space, a, b) for a, b in ranges],
                         sizes=[b - a for a, b in ranges], progress=progress)
    return np.concatenate(parts, axis=1)


def _price_range(job: tuple[list[list[Unit]], DesignSpace, int, int]) -> np.ndarray:
    """One job of the table: designs start..stop-1 (module level: a worker imports it)."""
    units, space, start, stop = job
    table = np.full((len(units), stop - start, len(COSTS)), np.nan)
    for column, index in enumerate(range(start, stop)):
        try:
            arch = design(space, space.values(index))
            for row, scheduled in enumerate(units):
                table[row, column] = price(scheduled, arch)
        except UserInputError:
            continue  # buffers too small for one tile: NaN, as in `dse.explore`
    return table


def admitted(table: np.ndarray, constraints: Constraints) -> np.ndarray:
    """(assignments, designs) mask of the priced points within every limit; if none is, an
    error naming the first limit that blocks and the smallest value of it that would admit a
    point (the other limits kept), as `dse.admissible` answers."""
    feasible = ~np.isnan(table[..., 0])
    masks = {name: _within(table, name, limit) for name, limit in constraints.limits()}
    kept = feasible & np.logical_and.reduce(list(masks.values()))
    if kept.any():
        return kept
    for name, limit in constraints.limits():
        if limit is None:
            continue
        others = feasible & np.logical_and.reduce([m for n, m in masks.items() if n != name])
        if others.any():
            smallest = table[..., COSTS.index(name.removeprefix("max_"))][others].min()
            raise UserInputError(f"no design meets {name}={limit:g}; the smallest value that "
                                 f"admits one (other limits kept) is {smallest:.4g}")
    raise UserInputError("no design meets the limits together; relax more than one of them")


def _within(table: np.ndarray, name: str, limit: float | None) -> np.ndarray:
    if limit is None:
        return np.ones(table.shape[:2], dtype=bool)
    with np.errstate(invalid="ignore"):
        return table[..., COSTS.index(name.removeprefix("max_"))] <= limit

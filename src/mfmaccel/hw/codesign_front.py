"""The fronts of a co-design: over (predicted quality, latency, energy, area) across every
assignment and design, and each uniform assignment's own design front, every point of it with
a mixed point that dominates it at equal or better predicted quality, or none.

Fronts are taken with numpy: a point joins when no kept point is at least as good on every
objective. A dominator is looked for on the same design first (the same accelerator, other
bits), then on any design.
"""

from __future__ import annotations

import numpy as np

from mfmaccel.hw.codesign_records import BitAssignment, CodesignPoint
from mfmaccel.hw.dse import DesignSpace, describe


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """Rows of `values` (points x objectives, all minimised) that no other row dominates (at
    least as good everywhere, better somewhere); duplicates keep their first."""
    order = np.lexsort(values.T[::-1])
    kept: list[int] = []
    for i in order:
        row = values[i]
        if kept and np.any(np.all(values[kept] <= row, axis=1)):
            continue
        kept.append(int(i))
    mask = np.zeros(len(values), dtype=bool)
    mask[kept] = True
    return mask


def dominator(predicted: np.ndarray, table: np.ndarray, kept: np.ndarray, *, target: int,
              design_index: int, candidates: list[int]) -> tuple[int, int] | None:
    """(assignment, design) of a point among `candidates` assignments that dominates
    assignment `target` on design `design_index` in (predicted quality, latency, energy,
    area): on the same design if one does, else on any design; the best predicted of those."""
    if not candidates:
        return None
    rows = np.array(candidates)
    quality = np.broadcast_to(predicted[rows][:, None, None], (len(rows), table.shape[1], 1))
    others = np.concatenate([quality, table[rows, :, :3]], axis=2)  # candidates x designs x 4
    point = np.array([predicted[target], *table[target, design_index, :3]])
    with np.errstate(invalid="ignore"):
        beats = (np.all(others <= point, axis=2) & np.any(others < point, axis=2)
                 & kept[rows])
    for columns in (beats[:, [design_index]], beats):
        found = np.argwhere(columns)
        if len(found):
            row, column = min(found, key=lambda rc: predicted[rows[rc[0]]])
            return int(rows[row]), design_index if columns.shape[1] == 1 else int(column)
    return None


def point(a: BitAssignment, design: int, costs: np.ndarray, space: DesignSpace) -> CodesignPoint:
    text = describe(space.values(design)).rsplit(" w", 1)[0]  # the bits are the assignment's
    return CodesignPoint(a.name, design, a.predicted, *map(float, costs), params=text)


def joint_front(assignments, predicted, table, kept, space) -> list[CodesignPoint]:
    rows, designs = np.nonzero(kept)
    values = np.column_stack([predicted[rows], table[rows, designs, :3]])
    chosen = np.flatnonzero(pareto_mask(values))
    points = [point(assignments[rows[i]], int(designs[i]), table[rows[i], designs[i]], space)
              for i in chosen]
    return sorted(points, key=lambda p: (p.predicted, p.latency_ms, p.energy_mj))


def uniform_front(target: BitAssignment, assignments, predicted, table, kept, space) -> dict:
    """The uniform assignment's own design front, each point with a mixed point that dominates
    it at equal or better predicted quality (None where none does)."""
    row = assignments.index(target)
    designs = np.flatnonzero(kept[row])
    own = designs[pareto_mask(table[row, designs, :3])]
    mixed = [i for i, a in enumerate(assignments) if a.origin != "uniform"]
    points = []
    for d in own:
        found = dominator(predicted, table, kept, target=row, design_index=int(d),
                          candidates=mixed)
        entry = point(target, int(d), table[row, d], space).to_dict()
        entry["dominated_by"] = None if found is None else {
            **point(assignments[found[0]], found[1], table[found], space).to_dict(),
            "same_design": found[1] == int(d)}
        points.append(entry)
    same = _dominated_on_same_design(row, mixed, predicted, table, kept)
    return {"assignment": target.name, "designs": int(kept[row].sum()),
            "dominated_on_same_design": same, "front": points,
            "front_dominated": sum(p["dominated_by"] is not None for p in points)}


def _dominated_on_same_design(row, mixed, predicted, table, kept) -> int:
    """How many of the uniform assignment's designs some mixed assignment beats there."""
    if not mixed:
        return 0
    quality_ok = predicted[mixed] <= predicted[row]
    with np.errstate(invalid="ignore"):
        no_worse = np.all(table[mixed, :, :3] <= table[row, :, :3], axis=2)
        better = np.any(table[mixed, :, :3] < table[row, :, :3], axis=2) | (
            predicted[mixed] < predicted[row])[:, None]
    beats = quality_ok[:, None] & no_worse & better & kept[mixed] & kept[row]
    return int(beats.any(axis=0).sum())

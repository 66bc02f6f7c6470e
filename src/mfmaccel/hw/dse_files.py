"""An exploration on disk: front.json holds the totals and the Pareto front, points.json every
admitted design; each is written atomically, so a reader never sees half a file."""

from __future__ import annotations

from pathlib import Path

from mfmaccel.fileio import atomic_write_json
from mfmaccel.hw.dse import Exploration


def write_exploration(result: Exploration, folder: Path) -> None:
    """front.json and points.json of `result` in `folder`."""
    record = result.to_dict()
    atomic_write_json(folder / "points.json", record.pop("points"))
    atomic_write_json(folder / "front.json", record)

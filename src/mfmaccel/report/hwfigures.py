"""The accelerator's figures written beside their records: a simulation's roofline next to its
JSON, an exploration's Pareto front in its folder. The hw layer writes the records; drawing
needs this layer (`hwplots`, matplotlib), so a caller writes the record there, then the figure
here."""

from __future__ import annotations

from pathlib import Path

from mfmaccel.fileio import atomic_write_bytes
from mfmaccel.hw.dse import Exploration
from mfmaccel.hw.simulate import Simulation
from mfmaccel.report.hwplots import dse_front, roofline


def write_roofline(result: Simulation, path: Path) -> None:
    """The roofline PNG at `path`; nothing where the workload has no GEMM to draw."""
    png = roofline(result.to_dict())
    if png:
        atomic_write_bytes(path, png)


def write_dse_front(result: Exploration, folder: Path) -> None:
    """front.png in `folder`: every admitted design and the front; nothing without designs."""
    png = dse_front(result.to_dict())
    if png:
        atomic_write_bytes(folder / "front.png", png)

"""The roofline: each GEMM classed by the roof it is drawn under, and labelled at its point."""

from __future__ import annotations

import math

from matplotlib.text import Annotation, Text

from mfmaccel.report.hwplots import (
    bound_at,
    label_spots,
    ridge_point,
    roofline,
    roofline_figure,
    roofline_points,
)

CLOCK_MHZ = 400.0


def gemm(name: str, macs: int, dram_bytes: float, cycles: int, bound: str) -> dict:
    """One simulated GEMM as `hw.simulate` records it (`bound` is the simulator's own call)."""
    return {"name": name, "unit": "gemm", "macs": macs, "dram_bytes": dram_bytes,
            "cycles": cycles, "compute_cycles": cycles, "bound": bound}


def simulation(ops: list[dict]) -> dict:
    """An edge-like accelerator: 102.4 GMAC/s peak, 8.5 GB/s, so the ridge is at 12.05."""
    return {"model": "toy", "arch": "edge", "clock_mhz": CLOCK_MHZ, "peak_gmacs": 102.4,
            "bandwidth_gbs": 8.5, "ops": ops}


def medical_like() -> dict:
    """The medical run's shapes: a head at 1 MAC/byte that the simulator calls compute-bound
    (6% array use makes its compute slower than its transfer), a convolution right of the
    ridge that it calls bandwidth-bound (some of its layers are), and attention's two GEMMs
    at almost the same spot."""
    return simulation([
        gemm("head", 28_000_000, 28_000_000, 1_822_000, "compute"),
        gemm("conv", 2_660_000_000, 100_000_000, 11_500_000, "bandwidth"),
        gemm("attention-score", 318_000_000, 10_000_000, 1_576_000, "compute"),
        gemm("attention-context", 318_000_000, 10_000_000, 1_577_000, "compute"),
        gemm("ffn", 4_500_000_000, 100_000_000, 18_000_000, "compute"),
        gemm("projection", 4_976_000_000, 100_000_000, 20_040_000, "compute"),
        {"name": "softmax", "unit": "softmax", "macs": 0, "dram_bytes": 0.0, "cycles": 10,
         "compute_cycles": 10, "bound": "compute"},
    ])


def test_bound_follows_the_side_of_the_ridge() -> None:
    record = medical_like()
    ridge = ridge_point(record)
    assert math.isclose(ridge, 102.4 / 8.5)
    assert bound_at(ridge * 0.99, ridge) == "bandwidth" and bound_at(ridge, ridge) == "compute"
    points = {p.name: p for p in roofline_points(record)}
    assert set(points) == {"head", "conv", "attention-score", "attention-context", "ffn",
                           "projection"}  # GEMMs only
    assert points["head"].bound == "bandwidth"  # on the slope, whatever the simulator said
    assert points["conv"].bound == "compute"  # right of the ridge
    for point in points.values():
        assert point.bound == ("bandwidth" if point.intensity < ridge else "compute")
        roof = min(102.4, 8.5 * point.intensity)
        assert point.attained_gmacs <= roof * 1.001  # drawn under its roof


def test_points_that_overlap_share_one_label() -> None:
    spots = label_spots(roofline_points(medical_like()))
    names = [spot.labels for spot in spots]
    assert ("attention (score, context)",) in names
    assert ("head",) in names and ("conv",) in names and len(spots) == 5


def _labels(fig) -> list[Annotation]:
    return [child for child in fig.axes[0].get_children()
            if isinstance(child, Annotation) and child.get_text()]


def test_each_label_sits_at_its_point_and_labels_do_not_overlap() -> None:
    fig = roofline_figure(medical_like())
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    notes = _labels(fig)
    assert sorted(n.get_text() for n in notes) == [
        "attention (score, context)", "conv", "ffn", "head", "projection"]
    boxes = []
    for note in notes:
        note.update_positions(renderer)
        box = Text.get_window_extent(note, renderer)
        x, y = ax.transData.transform(note.xy)
        nearest = math.hypot(max(box.x0 - x, 0, x - box.x1), max(box.y0 - y, 0, y - box.y1))
        assert nearest < 0.12 * fig.bbox.width, note.get_text()  # beside its point
        assert note.arrow_patch is not None  # and tied to it
        boxes.append(box)
    for i, box in enumerate(boxes):
        assert not any(box.overlaps(other) for other in boxes[i + 1:])


def test_no_gemm_no_roofline() -> None:
    assert roofline(simulation([])) is None
    assert roofline(medical_like()).startswith(b"\x89PNG")

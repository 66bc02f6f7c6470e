"""Design-space exploration: every combination of array shape, buffer sizes, bandwidth, clock
(and, jointly, the weights' bit-width) priced by the performance model on one workload, and the
Pareto front of latency, energy and area.

A sweep is a mixed-radix numbering of its design points, so any index range is an independent
job: the sweep is cut into `SWEEP_JOBS` ranges, and an `mfmaccel.parallel.Executor` runs them in
this process, on a local cluster or on one across machines (docs/sweeps.md), the results in
index order whatever ran them.

Fusion is decided inside each design: every attention and MLP block is priced fused and
unfused on that design's buffers and the cheaper form kept (`hw.simulate.simulate_unit`), so a
design with small buffers runs a block unfused that a larger one fuses. `DesignSpace.fusion`
says which fused schedules the designs have (the base preset's when None).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

from mfmaccel.errors import UserInputError
from mfmaccel.hw.arch import Arch, get_arch
from mfmaccel.hw.fusion import Unit, schedule_units
from mfmaccel.hw.ops import Gemm, Workload
from mfmaccel.hw.simulate import area_mm2, energy_breakdown_pj, simulate_unit
from mfmaccel.parallel import IN_PROCESS, Executor
from mfmaccel.records import Record

SWEPT = ("rows", "cols", "a_buffer_kib", "b_buffer_kib", "out_buffer_kib", "bandwidth_gbs",
         "clock_mhz", "vector_lanes", "weight_bits")
OBJECTIVES = ("latency_ms", "energy_mj", "area_mm2")
# Index ranges a sweep is cut into: enough for a cluster's workers to share evenly, few enough
# that sending each its scheduled workload stays small beside pricing its designs. Fixed, so
# the jobs (and the output) do not depend on who runs them.
SWEEP_JOBS = 64


@dataclass(frozen=True)
class DesignSpace:
    """The values to try per parameter; the other fields of `base` (technology, units, lanes,
    dataflows) stay as they are."""

    rows: tuple[int, ...] = (8, 16, 32, 64)
    cols: tuple[int, ...] = (8, 16, 32, 64)
    a_buffer_kib: tuple[float, ...] = (32, 128, 512)
    b_buffer_kib: tuple[float, ...] = (64, 256, 1024)
    out_buffer_kib: tuple[float, ...] = (16, 64, 256)
    bandwidth_gbs: tuple[float, ...] = (8.5, 25.6, 100)
    clock_mhz: tuple[float, ...] = (200, 400, 800)
    vector_lanes: tuple[int, ...] = (4, 16, 64)
    weight_bits: tuple[int, ...] = (8,)
    base: str = "edge"
    fusion: tuple[str, ...] | None = None  # `hw.arch.Fusion` kinds; None: the base preset's

    def __post_init__(self) -> None:
        for name in SWEPT:
            values = getattr(self, name)
            if not values:
                raise UserInputError(f"design space: {name} needs at least one value")
            if min(values) <= 0:
                raise UserInputError(f"design space: {name} values must be positive, got "
                                     f"{min(values)}; the smallest that works is any value > 0")
        get_arch(self.base)

    @property
    def size(self) -> int:
        return math.prod(len(getattr(self, name)) for name in SWEPT)

    def values(self, index: int) -> dict[str, float]:
        """The parameters of design point `index` (mixed radix, last parameter fastest)."""
        out = {}
        for name in reversed(SWEPT):
            options = getattr(self, name)
            index, digit = divmod(index, len(options))
            out[name] = options[digit]
        return {name: out[name] for name in SWEPT}


@dataclass
class DesignPoint(Record):
    index: int
    params: dict[str, float]
    latency_ms: float
    energy_mj: float
    area_mm2: float
    power_mw: float


@dataclass
class Exploration(Record):
    workload: str
    space_size: int
    evaluated: int
    infeasible: int  # designs whose buffers cannot hold one array tile
    seconds: float
    points_per_minute: float
    front: list[DesignPoint] = field(default_factory=list)
    points: list[DesignPoint] = field(default_factory=list)


@dataclass(frozen=True)
class Constraints:
    max_latency_ms: float | None = None
    max_energy_mj: float | None = None
    max_area_mm2: float | None = None
    max_power_mw: float | None = None

    def admits(self, point: DesignPoint) -> bool:
        return all(limit is None or getattr(point, _measure(name)) <= limit
                   for name, limit in self.limits())

    def limits(self) -> list[tuple[str, float | None]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


def _measure(limit_name: str) -> str:
    return limit_name.removeprefix("max_")


def describe(params: dict[str, float]) -> str:
    """'64x32 A512/B64/O64 KiB 100 GB/s 800 MHz 16 lanes w4': one design on one line."""
    p = params
    return (f"{p['rows']:g}x{p['cols']:g} A{p['a_buffer_kib']:g}/B{p['b_buffer_kib']:g}/"
            f"O{p['out_buffer_kib']:g} KiB {p['bandwidth_gbs']:g} GB/s {p['clock_mhz']:g} MHz "
            f"{p['vector_lanes']:g} lanes w{p['weight_bits']:g}")


def design(space: DesignSpace, params: dict[str, float]) -> Arch:
    base = get_arch(space.base)
    arch_params = {k: v for k, v in params.items() if k != "weight_bits"}
    if space.fusion is not None:
        arch_params["fusion"] = space.fusion
    return replace(base, name=f"{space.base}-dse", **arch_params)


def with_weight_bits(workload: Workload, bits: int) -> Workload:
    """The workload with every weight GEMM at `bits` (hardware-aware quantization: bytes moved
    and stored follow the bit-width)."""
    ops = [replace(op, weight_bits=bits) if isinstance(op, Gemm) and op.weight_bits else op
           for op in workload.ops]
    return Workload(workload.model, workload.description, ops)


def with_layer_bits(workload: Workload, bits: dict[str, int]) -> Workload:
    """The workload with each weight GEMM at the bits its module path (`Gemm.where`) is given:
    per-layer mixed precision. Weight GEMMs not named keep their bits."""
    ops = [replace(op, weight_bits=bits.get(op.where, op.weight_bits))
           if isinstance(op, Gemm) and op.weight_bits else op for op in workload.ops]
    return Workload(workload.model, workload.description, ops)


def price(units: list[Unit], arch: Arch) -> tuple[float, float, float, float]:
    """(latency ms, energy mJ, area mm², on-chip power mW) of scheduled units on one design;
    UserInputError when its buffers cannot hold one array tile."""
    results = [r for unit in units for r in simulate_unit(unit, arch)]
    seconds = sum(r.cycles for r in results) / (arch.clock_mhz * 1e6)
    energy = energy_breakdown_pj(results)
    on_chip = sum(energy.values()) - energy["dram"]
    return (seconds * 1e3, sum(energy.values()) * 1e-9, sum(area_mm2(arch).values()),
            on_chip * 1e-9 / seconds)


def evaluate_range(workload: Workload, space: DesignSpace, start: int, stop: int
                   ) -> tuple[list[DesignPoint], int]:
    """Design points start..stop-1 (and how many of them were infeasible)."""
    points, infeasible, _ = _evaluate((_scheduled(workload, space), space, start, stop,
                                       Constraints()))
    return points, infeasible


def sweep_ranges(size: int) -> list[tuple[int, int]]:
    """The sweep 0..size-1 as at most SWEEP_JOBS nearly equal index ranges, none empty."""
    pieces = min(SWEEP_JOBS, size)
    return [(size * i // pieces, size * (i + 1) // pieces) for i in range(pieces)]


def explore(workload: Workload, space: DesignSpace, *, executor: Executor = IN_PROCESS,
            constraints: Constraints | None = None,
            progress: Callable[[int, int], None] | None = None) -> Exploration:
    """Evaluate the space on `executor`; keep the points that meet `constraints` and their
    Pareto front. `progress(done, total)` counts designs evaluated.

    Each job also returns the front of its own admitted points, and the sweep's front is the
    front of those: a point no design beats is on its job's front too, so the serial step here
    sees a few hundred points, not the whole sweep."""
    began = time.perf_counter()
    constraints = constraints or Constraints()
    units = _scheduled(workload, space)
    ranges = sweep_ranges(space.size)
    parts = executor.map(_evaluate, [(units, space, a, b, constraints) for a, b in ranges],
                         sizes=[b - a for a, b in ranges], progress=progress)
    points = [p for part, _, _ in parts for p in part]
    infeasible = sum(n for _, n, _ in parts)
    if not points:
        raise UserInputError(f"no design in the sweep can hold one array tile in its buffers; "
                             f"raise out_buffer_kib to at least "
                             f"{min(space.rows) * min(space.cols) * 4 / 1024:g}")
    kept = admissible(points, constraints)
    front = pareto_front([p for _, _, local in parts for p in local])
    seconds = time.perf_counter() - began
    return Exploration(workload=f"{workload.model}: {workload.description}",
                       space_size=space.size, evaluated=len(points), infeasible=infeasible,
                       seconds=seconds, points_per_minute=space.size / seconds * 60,
                       front=front, points=kept)


def _scheduled(workload: Workload, space: DesignSpace) -> dict[int, list[Unit]]:
    """The workload's scheduled units at each weight bit-width the space sweeps: computed once
    here, not once per job."""
    return {bits: schedule_units(with_weight_bits(workload, bits)) for bits in space.weight_bits}


def _evaluate(job: tuple[dict[int, list[Unit]], DesignSpace, int, int, Constraints]
              ) -> tuple[list[DesignPoint], int, list[DesignPoint]]:
    """One job of a sweep (module level: a worker imports it by name): its design points, how
    many were infeasible, and the Pareto front of those `constraints` admit."""
    units, space, start, stop, constraints = job
    points, infeasible = [], 0
    for index in range(start, stop):
        params = space.values(index)
        try:
            cost = price(units[params["weight_bits"]], design(space, params))
        except UserInputError:
            infeasible += 1
            continue
        points.append(DesignPoint(index, params, *cost))
    return points, infeasible, pareto_front([p for p in points if constraints.admits(p)])


def admissible(points: list[DesignPoint], constraints: Constraints) -> list[DesignPoint]:
    """The points within every limit; if none is, an error naming the first limit that blocks
    and the smallest value of it that would admit a design (the others kept)."""
    kept = [p for p in points if constraints.admits(p)]
    if kept:
        return kept
    for name, limit in constraints.limits():
        if limit is None:
            continue
        others = replace(constraints, **{name: None})
        candidates = [getattr(p, _measure(name)) for p in points if others.admits(p)]
        if candidates:
            raise UserInputError(f"no design meets {name}={limit:g}; the smallest value that "
                                 f"admits one (other limits kept) is {min(candidates):.4g}")
    raise UserInputError("no design meets the limits together; relax more than one of them")


def pareto_front(points: list[DesignPoint]) -> list[DesignPoint]:
    """Points no other point beats on every objective (latency, energy, area all lower or equal,
    one strictly): sorted by latency, a point joins when no kept point dominates it."""
    front: list[DesignPoint] = []
    for p in sorted(points, key=lambda q: tuple(getattr(q, o) for o in OBJECTIVES)):
        key = tuple(getattr(p, o) for o in OBJECTIVES)
        if not any(all(getattr(f, o) <= v for o, v in zip(OBJECTIVES, key, strict=True))
                   for f in front):
            front.append(p)
    return front

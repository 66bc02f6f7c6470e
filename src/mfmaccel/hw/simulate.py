"""Performance, energy and area of a workload on an architecture, per operation and end to end.

Each operation runs alone (no overlap between operations); within one, off-chip loads overlap
compute (double buffering), so its time is the larger of its compute cycles and its off-chip
bytes over the link's bytes per cycle, and it is compute- or bandwidth-bound accordingly. An
architecture that copies operands through its engine's buffers instead (`Arch.operand_fill`,
the RTL top) adds the copies' cycles to the compute's, less what two banks hide
(`Arch.fill_chunk`: the next chunk of weights copied while the engine computes this one);
units that pass over a row several times cost each pass (`Arch.unit_rows`).
What stays on chip between operations is the architecture's `fusion` (`hw.fusion`): attention
and MLP blocks are priced fused and unfused and the form with fewer off-chip bytes (then fewer
cycles) is kept, per block; element-wise operations cost a pass over off-chip memory unless
fused into the GEMM epilogue before them. The record names the fusion and each operation's
schedule.
Energy is dynamic only: MACs, non-linear unit operations, on-chip buffer bytes, off-chip bytes.
Area: the MAC array, one requantizer per array column, `vector_lanes` lanes of each non-linear
unit, and the buffers; the controller and interconnect are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from mfmaccel.errors import UserInputError
from mfmaccel.hw.arch import UNIT_OPS, Arch
from mfmaccel.hw.dataflow import ACT_BYTES, PSUM_BYTES, GemmShape, map_gemm, os_cycles
from mfmaccel.hw.fusion import (
    PROBABILITY_BYTES,
    SCORE_BYTES,
    VECTOR_DRAM_BYTES,
    AttentionBlock,
    FusedTraffic,
    MlpBlock,
    Unit,
    fused_attention,
    fused_mlp,
    schedule_units,
    vector_dram_bytes,
)
from mfmaccel.hw.intops.online_softmax import attention_state_bytes, untiled_score_bytes
from mfmaccel.hw.ops import Gemm, Op, VectorOp, Workload
from mfmaccel.records import Record


@dataclass
class OpResult(Record):
    """One operation (with its repeat count) on the architecture."""

    name: str
    unit: str
    count: int
    macs: int
    cycles: int
    compute_cycles: int
    dram_bytes: float
    sram_bytes: float
    energy_pj: dict[str, float]  # by where it goes: mac, requant, vector, sram, dram
    bound: str  # "compute" or "bandwidth"
    utilisation: float  # MACs done / MAC slots in the compute cycles (GEMMs), else 0
    mapping: str = ""
    schedule: str = ""  # "unfused", "fused", or the fused schedule that ran it and its tiling


@dataclass
class Simulation(Record):
    model: str
    workload: str
    arch: str
    tech: str
    clock_mhz: float
    peak_gmacs: float  # MACs per second at full array use, / 1e9
    bandwidth_gbs: float
    cycles: int
    latency_ms: float
    energy_mj: float
    power_mw: float  # average over the run, on-chip only (off-chip energy excluded)
    area_mm2: float
    macs: int
    utilisation: float
    dram_bytes: float
    sram_bytes: float
    energy_breakdown_mj: dict[str, float] = field(default_factory=dict)
    area_breakdown_mm2: dict[str, float] = field(default_factory=dict)
    matmul_area_share: float = 0.0  # the MAC array's
    matmul_power_share: float = 0.0  # the MAC array's, of on-chip power
    ops: list[OpResult] = field(default_factory=list)
    fusion: list[str] = field(default_factory=list)  # the fused schedules the arch offered


def simulate(workload: Workload, arch: Arch) -> Simulation:
    """Every operation of `workload` mapped onto `arch`, and the totals."""
    if arch.array != "mac":
        raise UserInputError(f"arch {arch.name} has an accumulate-only array, which runs "
                             f"spike-fed GEMMs, not {workload.model}'s integer workload; price "
                             f"a spiking program with hw.spiking_array (benchmarks/"
                             f"spiking_accelerator.py)")
    missing = _missing_units(workload, arch)
    if missing:
        unit, where = missing
        raise UserInputError(f"{workload.model}: operation '{unit}' (at {where or 'top'}) has no "
                             f"unit on arch {arch.name}; choose an arch with it or add "
                             f"'{unit}' to its units")
    results = [r for unit in schedule_units(workload) for r in simulate_unit(unit, arch)]
    return _totals(workload, arch, results)


def _missing_units(workload: Workload, arch: Arch) -> tuple[str, str] | None:
    for op in workload.ops:
        if isinstance(op, VectorOp) and op.unit not in arch.units:
            return op.unit, op.where
    if "requant" not in arch.units:
        return "requant", "every GEMM output"
    return None


def simulate_unit(unit: Unit, arch: Arch) -> list[OpResult]:
    """One unit of `hw.fusion.schedule_units`: a block, fused where that moves fewer off-chip
    bytes (then cycles), or a single operation."""
    if isinstance(unit, AttentionBlock):
        return _attention_block(unit, arch)
    if isinstance(unit, MlpBlock):
        return _mlp_block(unit, arch)
    return [simulate_op(unit, arch)]


def simulate_op(op: Op, arch: Arch) -> OpResult:
    """One operation on its own. An attention product outside a block keeps its scores on chip
    (spilling whole rows that do not fit under attention="full")."""
    if isinstance(op, Gemm):
        return _lone_gemm(op, arch)
    kind = VECTOR_DRAM_BYTES.get(op.unit, ("",))[0]
    return _vector(op, arch, vector_dram_bytes(op.unit, arch),
                   schedule="fused" if arch.fuses(kind) else "unfused")


def _weight_shape(op: Gemm) -> GemmShape:
    return GemmShape(op.m, op.n, op.k,
                     w_bytes=ACT_BYTES if op.weight_bits is None else op.weight_bits / 8)


def _lone_gemm(op: Gemm, arch: Arch) -> OpResult:
    shape = replace(_weight_shape(op), a_on_chip=op.role == "attention-context",
                    out_on_chip=op.role == "attention-score")
    spill, extra_ops = _attention_extra(op, arch) if op.role == "attention-score" else (0.0, 0)
    return _gemm(op, arch, shape, spill=spill, extra_mults=extra_ops * op.batch * op.count)


def _cost(results: list[OpResult]) -> tuple[float, int]:
    return sum(r.dram_bytes for r in results), sum(r.cycles for r in results)


def _choose(fused: list[OpResult], unfused: list[OpResult]) -> list[OpResult]:
    """The fused form where it moves no more off-chip bytes (ties: no more cycles)."""
    return fused if _cost(fused) <= _cost(unfused) else unfused


def _attention_block(block: AttentionBlock, arch: Arch) -> list[OpResult]:
    score, softmax, context = (replace(op, count=block.count) for op in block.ops)
    unfused = [
        _gemm(score, arch, replace(_weight_shape(score), out_bytes=SCORE_BYTES),
              schedule="unfused"),
        _vector(softmax, arch, SCORE_BYTES + PROBABILITY_BYTES),
        _gemm(context, arch, replace(_weight_shape(context), a_bytes=PROBABILITY_BYTES),
              schedule="unfused"),
    ]
    plan = fused_attention(arch, block) if arch.fuses("attention") else None
    if plan is None:
        return unfused
    fused = [_gemm(score, arch, None, plan=plan, index=0, mapped=unfused[0]),
             _vector(softmax, arch, 0, schedule=plan.detail),
             _gemm(context, arch, None, plan=plan, index=2, mapped=unfused[2])]
    return _choose(fused, unfused)


def _mlp_block(block: MlpBlock, arch: Arch) -> list[OpResult]:
    ops = [replace(op, count=block.count) for op in block.ops]
    unfused = [simulate_op(op, arch) for op in ops]
    for result in unfused:
        result.schedule = result.schedule or "unfused"
    plan = fused_mlp(arch, block) if arch.fuses("mlp") else None
    if plan is None:
        return unfused
    fused = [_gemm(op, arch, None, plan=plan, index=i, mapped=alone) if isinstance(op, Gemm)
             else _vector(op, arch, 0, schedule=plan.detail)
             for i, (op, alone) in enumerate(zip(ops, unfused, strict=True))]
    return _choose(fused, unfused)


def _gemm(op: Gemm, arch: Arch, shape: GemmShape | None, *, spill: float = 0.0,
          extra_mults: float = 0.0, plan: FusedTraffic | None = None, index: int = 0,
          mapped: OpResult | None = None, schedule: str = "") -> OpResult:
    """A GEMM mapped on its own (`shape` says what crosses the link; `spill` bytes more per
    product), or as operation `index` of a fused `plan`: the array works as in `mapped`, the
    same product priced alone, and the plan's off-chip bytes replace the mapping's."""
    tech = arch.tech
    times = op.batch * op.count
    if plan is None:
        mapping = map_gemm(arch, shape)
        compute, flow = mapping.compute_cycles * times, f"{mapping.dataflow}: {mapping.block}"
        dram = (mapping.dram_bytes + spill) * times
        sram = mapping.sram_bytes * times
    else:
        compute, flow = mapped.compute_cycles, mapped.mapping
        dram = plan.dram_bytes[index] * op.count
        sram = mapped.sram_bytes - mapped.dram_bytes + dram
        extra_mults = plan.extra_mults * op.count if index == 0 else 0
        schedule = plan.detail
    cycles = max(compute, math.ceil(dram / arch.bytes_per_cycle))
    bound = "compute" if compute >= cycles else "bandwidth"
    if arch.operand_fill is not None:  # copied in and out around the compute
        cycles, bound = _with_copies(op, arch, compute)
    outputs = op.m * op.n * times
    energy = {"mac": op.macs * tech.mac_pj,
              "requant": outputs * _unit_pj("requant", tech) + extra_mults * tech.mult32_pj,
              "sram": sram * arch.sram_pj_per_byte("b"), "dram": dram * tech.dram_pj_per_byte}
    return OpResult(
        name=op.role, unit="gemm", count=op.count, macs=op.macs, cycles=cycles,
        compute_cycles=compute, dram_bytes=dram, sram_bytes=sram, energy_pj=energy,
        bound=bound, utilisation=op.macs / (compute * arch.macs), mapping=flow,
        schedule=schedule,
    )


def _with_copies(op: Gemm, arch: Arch, compute: int) -> tuple[int, str]:
    """(cycles, bound) of a GEMM whose operands are copied through the engine's buffers
    (`Arch.operand_fill`): the copies before and after the compute; with `Arch.fill_chunk`,
    B, its bias and multipliers `fill_chunk` columns at a time, each chunk's copies beside the
    previous chunk's compute (two banks), then that chunk's outputs."""
    rate, chunk = arch.operand_fill, arch.fill_chunk
    if not chunk or op.n <= chunk:
        fill = math.ceil(_filled_elements(op) / rate)
        return compute + fill, "compute" if compute >= fill else "fill"
    widths = [min(chunk, op.n - start) for start in range(0, op.n, chunk)]
    engine = [os_cycles(arch, op.m, width, op.k) for width in widths]
    copies = [math.ceil((op.k + 2) * width / rate) for width in widths]
    behind = sum(max(e, c) for e, c in zip(engine[:-1], copies[1:], strict=True))
    per_product = (math.ceil(op.m * (op.k + op.n) / rate) + copies[0] + behind + engine[-1])
    bound = "fill" if sum(copies[1:]) > sum(engine[:-1]) else "compute"
    return per_product * op.batch * op.count, bound


def _filled_elements(op: Gemm) -> int:
    """Elements copied through the engine's buffers for one GEMM under `Arch.operand_fill`:
    A, B and the outputs, and per output channel its bias and requantization multiplier."""
    per_product = op.m * op.k + op.k * op.n + op.m * op.n + 2 * op.n
    return per_product * op.batch * op.count


def _attention_extra(op: Gemm, arch: Arch) -> tuple[float, int]:
    """Attention's score rows (per head): off-chip bytes when whole rows do not fit on chip
    (int32 scores out and back, 16-bit probabilities out and back), and the extra rescaling
    multiplies of the tiled (online-softmax) form, which never needs whole rows."""
    keys, dim = op.n, op.k
    out_buf = arch.buffer_bytes("out")
    if arch.attention == "full":
        if untiled_score_bytes(arch.rows, keys) <= out_buf:
            return 0.0, 0
        return float(op.m * keys * 2 * (SCORE_BYTES + PROBABILITY_BYTES)), 0
    one_key = attention_state_bytes(arch.rows, dim, 1)
    if one_key > out_buf:
        raise UserInputError(f"arch {arch.name}: tiled attention with head size {dim} needs "
                             f"out_buffer_kib of at least {one_key / 1024:g}")
    tile = 1 + (out_buf - one_key) // (arch.rows * PSUM_BYTES)
    return 0.0, op.m * dim * (math.ceil(keys / min(tile, keys)) - 1)


def _vector(op: VectorOp, arch: Arch, dram_per_element: float, schedule: str = "") -> OpResult:
    """An element-wise or row-wise pass moving `dram_per_element` off-chip bytes per element."""
    tech = arch.tech
    compute = _vector_cycles(op, arch)
    if arch.operand_fill is not None:  # activations stay in the scratchpad
        dram_per_element = 0.0
    dram = op.elements * dram_per_element
    cycles = max(compute, math.ceil(dram / arch.bytes_per_cycle))
    sram = 2 * op.elements * ACT_BYTES
    energy = {"vector": op.elements * _unit_pj(op.unit, tech),
              "sram": sram * arch.sram_pj_per_byte("a"), "dram": dram * tech.dram_pj_per_byte}
    return OpResult(
        name=op.unit, unit=op.unit, count=op.count, macs=0, cycles=cycles,
        compute_cycles=compute, dram_bytes=dram, sram_bytes=sram, energy_pj=energy,
        bound="compute" if compute >= cycles else "bandwidth", utilisation=0.0,
        schedule=schedule or "unfused",
    )


def _vector_cycles(op: VectorOp, arch: Arch) -> int:
    """`vector_lanes` elements per cycle, times the unit's passes over each row plus its
    per-row cycles where `Arch.unit_rows` names them."""
    passes, extra = next(((p, e) for unit, p, e in arch.unit_rows if unit == op.unit), (1, 0))
    if passes == 1 and extra == 0:
        return math.ceil(op.rows * op.length / arch.vector_lanes) * op.count
    beats = math.ceil(op.length / arch.vector_lanes)
    return op.rows * op.count * (passes * beats + extra)


def _unit_pj(unit: str, tech) -> float:
    """Energy of one element through a non-linear unit (its 32-bit multiplies and adds)."""
    mult, add = UNIT_OPS[unit]
    return mult * tech.mult32_pj + add * tech.add32_pj


def area_mm2(arch: Arch) -> dict[str, float]:
    """Area by part, mm^2."""
    tech = arch.tech
    mult, add = UNIT_OPS["requant"]
    parts = {"mac_array": arch.macs * tech.mac_um2,
             "requant": arch.cols * (mult * tech.mult32_um2 + add * tech.add32_um2)}
    for unit in arch.units:
        if unit != "requant":
            mult, add = UNIT_OPS[unit]
            parts[unit] = arch.vector_lanes * (mult * tech.mult32_um2 + add * tech.add32_um2)
    buffers = sum(arch.buffer_bytes(x) for x in ("a", "b", "out"))
    parts["buffers"] = buffers * tech.sram_um2_per_byte
    return {name: um2 / 1e6 for name, um2 in parts.items()}


def _totals(workload: Workload, arch: Arch, results: list[OpResult]) -> Simulation:
    cycles = sum(r.cycles for r in results)
    seconds = cycles / (arch.clock_mhz * 1e6)
    energy = {k: v * 1e-9 for k, v in energy_breakdown_pj(results).items()}
    on_chip = sum(v for k, v in energy.items() if k != "dram")
    areas = area_mm2(arch)
    macs = sum(r.macs for r in results)
    compute = sum(r.compute_cycles for r in results if r.unit == "gemm")
    return Simulation(
        model=workload.model, workload=workload.description, arch=arch.name,
        tech=arch.tech.name, clock_mhz=arch.clock_mhz,
        peak_gmacs=arch.macs * arch.clock_mhz / 1e3, bandwidth_gbs=arch.bandwidth_gbs,
        cycles=cycles,
        latency_ms=seconds * 1e3, energy_mj=sum(energy.values()),
        power_mw=on_chip / seconds if seconds else 0.0, area_mm2=sum(areas.values()),
        macs=macs, utilisation=macs / (compute * arch.macs) if compute else 0.0,
        dram_bytes=sum(r.dram_bytes for r in results),
        sram_bytes=sum(r.sram_bytes for r in results),
        energy_breakdown_mj=energy, area_breakdown_mm2=areas,
        matmul_area_share=areas["mac_array"] / sum(areas.values()),
        matmul_power_share=energy["mac"] / on_chip if on_chip else 0.0,
        ops=results, fusion=list(arch.fusion),
    )


def energy_breakdown_pj(results: list[OpResult]) -> dict[str, float]:
    """pJ by where it goes (MACs, requantization, other units, on-chip and off-chip bytes)."""
    out = dict.fromkeys(("mac", "requant", "vector", "sram", "dram"), 0.0)
    for r in results:
        for part, pj in r.energy_pj.items():
            out[part] += pj
    return out

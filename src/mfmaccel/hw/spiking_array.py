"""A spiking accelerator variant (`Arch.array == "accumulate"`, `arch.spiking_variant`) priced
against the integer accelerator on the same GEMMs: ACs against MACs, on-chip and off-chip
bytes, energy by part, cycles, the adders equal throughput needs, and the break-even spike rate
(issue 25; Yan et al., arXiv 2409.08290: once data movement is counted, spikes must be rare to
pay).

The spiking network runs step-major, as `mfmaccel.spiking` runs it: in every time step a spike
crosses the whole network, so every GEMM works in every step. Each spike-fed GEMM
(`SpikeGemm`) has one or more operands that arrive as spikes (`SpikeFeed`: S unit spikes over
the T steps of the run, from N neurons, each unit spike meeting `fan_out` stationary values).
Over the run it costs:

- ACs: an accumulate-only array adds, per unit spike, one row of `fan_out` stationary values
  (a weight row; in attention, the other operand's counts) into as many int32 accumulators:
  S x fan_out ACs at `tech.add32_pj` (a negative spike subtracts on the same adder). This is
  what replaces the MACs; it is the only term besides the next that grows with the spikes.
- stationary reads: event-driven, the array reads only the rows its spikes select:
  S x fan_out x bytes per value from the B buffer.
- stationary residency: step-major means every GEMM's stationary operand is needed in every
  step, so the B buffer must hold them all at once to keep them. Those it holds together
  (largest first) are loaded from DRAM once; the rest stream from DRAM every step (T x their
  bytes), which is what makes long runs costly on a small chip.
- membrane state in SRAM: every step each output's int32 accumulator and int32 membrane are
  read and written (8 bytes in, 8 out, at the out buffer's energy), an add and a compare each
  (2 x add32): a multi-threshold neuron fires at most `levels` a step, so it can fire in a step
  in which nothing reached it, and every neuron must be visited every step. States the out
  buffer holds together stay on chip; the rest spill, read from and written to DRAM every step.
  `compare(on_chip=True)` keeps every stationary operand and state whatever the buffers hold:
  no chip of that size exists, it is the best case for spikes (the on-chip state Yan et al.
  assume).
- spike traffic: each fed population writes a dense map of its neurons' spikes every step and
  the GEMM reads it: 2 x N x bits / 8 bytes a step through the A buffer; bits carry the signed
  count a step may hold, ceil(log2(2 levels + 1)), or 8 for a graded message (levels None). A
  map is consumed within the step it is written, tile by tile, so it never leaves the chip.

Left out on both sides: the graded operators (the int16 residual stream, softmax, the
LayerNorms' statistics, GELU): the integer side prices only these GEMMs (`simulate_op`, each
run alone), while the spiking side would recompute them every step; and each neuron's
fixed-point multiply of its input's change by its requantization factor. Both favour the
spiking side, so its energy here is a lower bound and the break-even rate an upper bound. Not
modelled: a time-inner schedule (a layer, or a tile of its rows, runs all T steps before the
next), which would keep a tile's membranes on chip across the steps and move its spike trains
(T x bits per neuron) off chip instead; the conversion runs step-major, and so does this.

Cycles: the ACs over the rows x cols adders at full use, the membrane updates over
`vector_lanes`, the off-chip bytes over the link; per GEMM the larger of the first two summed
and the link's. Equal throughput: the adders that do every add of the run (ACs and the
membranes' add and compare) in the integer accelerator's cycles; the link's cycles, reported
beside it, say whether the spiking traffic allows that latency at all.

Break-even: energy is affine in the spikes, E(S) = E0 + S e, with E0 the energy of a run in
which nothing fires (streamed stationaries, membrane updates, spike maps) and e the energy of
one unit spike (its ACs and stationary reads, over the feeds in the measured mix). The rate at
which E equals the integer accelerator's energy on the same GEMMs, as unit spikes per fed
neuron per step, is the break-even rate; where E0 alone exceeds the integer energy no rate
pays and it is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from mfmaccel.errors import UserInputError
from mfmaccel.hw.arch import Arch, ArrayKind, spiking_variant
from mfmaccel.hw.ops import DEFAULT_BITS, GEMM_ROLES, Gemm
from mfmaccel.hw.simulate import simulate_op
from mfmaccel.records import Record

ACC_BYTES = 4  # a neuron's int32 accumulator
MEMBRANE_BYTES = 4  # and its int32 membrane
STATE_BYTES = ACC_BYTES + MEMBRANE_BYTES
NEURON_ADDS = 2  # a membrane update: an add, a compare against the threshold
GRADED_BITS = 8  # a graded message (levels None) per neuron per step
ADDER_FLOPS = 32  # an adder's int32 output register


@dataclass(frozen=True, kw_only=True)
class SpikeFeed:
    """One operand of a GEMM that arrives as spikes: `spikes` unit spikes over the run (signed
    ones by magnitude) from `neurons` neurons, each meeting `fan_out` stationary values of
    `value_bytes` (a weight row, or the other attention operand's counts), out of
    `stationary_bytes` in all."""

    population: str
    spikes: float
    neurons: int
    fan_out: int
    stationary_bytes: float
    value_bytes: float = 1.0

    def __post_init__(self) -> None:
        if not self.spikes >= 0:
            raise UserInputError(f"{self.population}: spikes must be at least 0, got "
                                 f"{self.spikes}")
        for name in ("neurons", "fan_out"):
            if getattr(self, name) < 1:
                raise UserInputError(f"{self.population}: {name} must be at least 1, got "
                                     f"{getattr(self, name)}")
        if self.stationary_bytes < 0 or not self.value_bytes > 0:
            raise UserInputError(f"{self.population}: stationary_bytes must be at least 0 and "
                                 f"value_bytes above 0, got {self.stationary_bytes} and "
                                 f"{self.value_bytes}")

    @property
    def accumulates(self) -> float:
        return self.spikes * self.fan_out


@dataclass(frozen=True, kw_only=True)
class SpikeGemm:
    """`batch` (m x k) @ (k x n) products of the integer program (`role`: how the integer
    accelerator maps them, one of `workload.GEMM_ROLES`), run by the spiking program fed by
    `feeds`; `out_neurons` accumulators and membranes updated each step (None: every output)."""

    name: str
    role: str
    m: int
    k: int
    n: int
    feeds: tuple[SpikeFeed, ...]
    batch: int = 1
    weight_bits: int | None = DEFAULT_BITS  # None: both operands are activations
    out_neurons: int | None = None

    def __post_init__(self) -> None:
        for name in ("m", "k", "n", "batch"):
            if getattr(self, name) < 1:
                raise UserInputError(f"{self.name}: {name} must be at least 1, got "
                                     f"{getattr(self, name)}")
        if self.role not in GEMM_ROLES:
            raise UserInputError(f"{self.name}: role must be one of {', '.join(GEMM_ROLES)}, "
                                 f"got '{self.role}'")
        if not self.feeds:
            raise UserInputError(f"{self.name}: a spike-fed GEMM needs at least one feed")
        if self.out_neurons is not None and self.out_neurons < 0:
            raise UserInputError(f"{self.name}: out_neurons must be at least 0, got "
                                 f"{self.out_neurons}")

    @property
    def states(self) -> int:
        """Accumulators (with membranes) the GEMM updates every step."""
        return self.batch * self.m * self.n if self.out_neurons is None else self.out_neurons

    @property
    def spikes(self) -> float:
        return sum(f.spikes for f in self.feeds)

    @property
    def neurons(self) -> int:
        return sum(f.neurons for f in self.feeds)

    @property
    def accumulates(self) -> float:
        return sum(f.accumulates for f in self.feeds)

    def integer_op(self) -> Gemm:
        """The same product as the integer accelerator runs it."""
        return Gemm(role=self.role, m=self.m, n=self.n, k=self.k, batch=self.batch,
                    weight_bits=self.weight_bits, where=self.name)


def weight_gemm(name: str, role: str, *, population: str, spikes: float, neurons: int, m: int,
                k: int, n: int, weight_bits: int = DEFAULT_BITS) -> SpikeGemm:
    """A GEMM with stored k x n weights fed by one population: a unit spike meets a weight
    row of n."""
    feed = SpikeFeed(population=population, spikes=spikes, neurons=neurons, fan_out=n,
                     stationary_bytes=k * n * weight_bits / 8, value_bytes=weight_bits / 8)
    return SpikeGemm(name=name, role=role, m=m, k=k, n=n, feeds=(feed,),
                     weight_bits=weight_bits)


def spike_bits(levels: int | None) -> int:
    """Bits of one neuron's entry in a step's spike map: a signed count of at most `levels`
    unit spikes (2 levels + 1 values), or a graded 8-bit message (None)."""
    if levels is None:
        return GRADED_BITS
    if levels < 1:
        raise UserInputError(f"levels must be at least 1 (None: graded), got {levels}")
    return math.ceil(math.log2(2 * levels + 1))


@dataclass
class SideCost(Record):
    """One side (integer or spiking) of one GEMM or of all of them."""

    operations: float  # MACs or ACs
    cycles: int
    compute_cycles: int
    dram_bytes: float
    sram_bytes: float
    # integer: mac, requant, sram, dram (`hw.simulate`); spiking: ac and stationary_reads
    # (growing with the spikes), neuron, state_sram, spike_maps, stationary_loads (DRAM and the
    # buffer's write), state_dram
    energy_pj: dict[str, float]
    total_pj: float = 0.0
    bound: str = ""  # "compute" or "bandwidth" (per GEMM)


@dataclass
class GemmComparison(Record):
    """One spike-fed GEMM on both accelerators, and its break-even spike rate."""

    name: str
    macs: int
    accumulates: float
    spikes: float
    neurons: int  # fed neurons (each feed's, summed)
    spike_rate: float  # unit spikes per fed neuron per step
    integer: SideCost
    spiking: SideCost
    fixed_pj: float  # E0: the spiking energy were nothing to fire
    pj_per_spike: float  # e: one unit spike's ACs and stationary reads, in the measured mix
    break_even_rate: float  # 0: E0 alone exceeds the integer energy, no rate pays
    stationary_on_chip: list[bool]  # per feed: loaded once (True) or streamed every step
    state_on_chip: bool  # the accumulators and membranes stay (True) or spill every step


@dataclass
class SpikingComparison(Record):
    """Spike-fed GEMMs priced on a spiking variant against its integer accelerator."""

    integer_arch: str
    spiking_arch: str
    tech: str
    steps: int
    levels: int | None
    spike_bits: int
    macs: int
    accumulates: float
    accumulates_per_mac: float
    spikes: float
    spike_rate: float
    break_even_rate: float
    fixed_share: float  # E0 / integer energy: above 1, no spike rate pays
    energy_ratio: float  # spiking / integer
    integer: SideCost
    spiking: SideCost
    latency_ms: dict[str, float]
    adders: dict[str, float | bool]  # the array's, for equal throughput, link allows it
    area_mm2: dict[str, float]  # MAC array, the adder array, the equal-throughput adders
    gemms: list[GemmComparison] = field(default_factory=list)
    on_chip: bool = False  # priced as if every stationary operand and state stayed on chip


def compare(gemms: Sequence[SpikeGemm], integer: Arch, *, steps: int, levels: int | None,
            spiking: Arch | None = None, on_chip: bool = False) -> SpikingComparison:
    """`gemms` run for `steps` time steps on `spiking` (default: `integer`'s spiking
    variant) against the same GEMMs on `integer`, and the break-even spike rates. `on_chip`:
    every stationary operand and state stays on chip whatever the buffers hold (no chip this
    size exists: the best case for spikes, what they could gain once memory is not the limit)."""
    spiking = spiking or spiking_variant(integer)
    _check(gemms, integer, spiking, steps)
    bits = spike_bits(levels)
    kept = iter(_resident([f.stationary_bytes for g in gemms for f in g.feeds],
                          math.inf if on_chip else spiking.buffer_bytes("b")))
    states = _resident([g.states * STATE_BYTES for g in gemms],
                       math.inf if on_chip else spiking.buffer_bytes("out"))
    rows = [_compare_gemm(g, integer, spiking, steps=steps, bits=bits,
                          stationary=[next(kept) for _ in g.feeds], state=state)
            for g, state in zip(gemms, states, strict=True)]
    result = _totals(rows, gemms, integer, spiking, steps=steps, levels=levels, bits=bits)
    result.on_chip = on_chip
    return result


def _check(gemms: Sequence[SpikeGemm], integer: Arch, spiking: Arch, steps: int) -> None:
    if steps < 1:
        raise UserInputError(f"steps must be at least 1, got {steps}")
    if not gemms:
        raise UserInputError("no spike-fed GEMMs to price")
    if integer.array != ArrayKind.mac or spiking.array != ArrayKind.accumulate:
        raise UserInputError(f"compare an integer accelerator (array 'mac', got "
                             f"{integer.name}'s '{integer.array}') with a spiking variant "
                             f"(array 'accumulate', got {spiking.name}'s '{spiking.array}')")
    if integer.tech != spiking.tech:
        raise UserInputError(f"{integer.name} ({integer.tech.name}) and {spiking.name} "
                             f"({spiking.tech.name}): compare them on one technology")


def _resident(sizes: list[float], capacity: float) -> list[bool]:
    """Which of `sizes` one buffer of `capacity` bytes holds together, largest first (each
    kept one saves T - 1 loads of its bytes, so the most bytes kept saves the most)."""
    kept, left = [False] * len(sizes), float(capacity)
    for index in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        if sizes[index] <= left:
            kept[index], left = True, left - sizes[index]
    return kept


def _spike_pj(feed: SpikeFeed, arch: Arch) -> float:
    """One unit spike of `feed`: its ACs and the stationary values they read."""
    return feed.fan_out * (arch.tech.add32_pj + feed.value_bytes * arch.sram_pj_per_byte("b"))


def _spiking_side(g: SpikeGemm, arch: Arch, *, steps: int, bits: int,
                  stationary: list[bool], state: bool) -> tuple[SideCost, float, float]:
    """The GEMM on the spiking variant over `steps` steps: its cost, E0 and e (module
    docstring)."""
    tech = arch.tech
    event_reads = sum(f.spikes * f.fan_out * f.value_bytes for f in g.feeds)
    loads = sum(f.stationary_bytes * (1 if kept else steps)
                for f, kept in zip(g.feeds, stationary, strict=True))
    updates = steps * g.states
    state_bytes = 2 * STATE_BYTES * updates
    spilled = 0.0 if state else state_bytes
    spike_maps = 2 * steps * g.neurons * bits / 8
    energy = {"ac": g.accumulates * tech.add32_pj,  # these two grow with the spikes
              "stationary_reads": event_reads * arch.sram_pj_per_byte("b"),
              "neuron": updates * NEURON_ADDS * tech.add32_pj,
              "state_sram": state_bytes * arch.sram_pj_per_byte("out"),
              "spike_maps": spike_maps * arch.sram_pj_per_byte("a"),
              "stationary_loads": loads * (arch.sram_pj_per_byte("b") + tech.dram_pj_per_byte),
              "state_dram": spilled * tech.dram_pj_per_byte}
    total = sum(energy.values())
    variable = sum(f.spikes * _spike_pj(f, arch) for f in g.feeds)
    weights = ([f.spikes for f in g.feeds] if g.spikes > 0 else [f.neurons for f in g.feeds])
    per_spike = sum(w * _spike_pj(f, arch) for w, f in zip(weights, g.feeds, strict=True)) \
        / sum(weights)
    compute = math.ceil(g.accumulates / arch.macs) + steps * math.ceil(g.states /
                                                                       arch.vector_lanes)
    link = math.ceil((loads + spilled) / arch.bytes_per_cycle)
    cost = SideCost(operations=g.accumulates, cycles=max(compute, link),
                    compute_cycles=compute, dram_bytes=loads + spilled,
                    sram_bytes=event_reads + loads + state_bytes + spike_maps,
                    energy_pj=energy, total_pj=total,
                    bound="compute" if compute >= link else "bandwidth")
    return cost, total - variable, per_spike


def _integer_side(g: SpikeGemm, arch: Arch) -> SideCost:
    """The same product on the integer accelerator, priced as `hw.simulate` prices it alone."""
    op = simulate_op(g.integer_op(), arch)
    return SideCost(operations=op.macs, cycles=op.cycles, compute_cycles=op.compute_cycles,
                    dram_bytes=op.dram_bytes, sram_bytes=op.sram_bytes,
                    energy_pj=dict(op.energy_pj), total_pj=sum(op.energy_pj.values()),
                    bound=op.bound)


def break_even_rate(*, integer_pj: float, fixed_pj: float, pj_per_spike: float, neurons: int,
                    steps: int) -> float:
    """Unit spikes per fed neuron per step at which E0 + S e equals the integer energy; 0
    where E0 alone is at least that (no rate pays)."""
    if fixed_pj >= integer_pj:
        return 0.0
    return (integer_pj - fixed_pj) / pj_per_spike / (neurons * steps)


def _compare_gemm(g: SpikeGemm, integer: Arch, spiking: Arch, *, steps: int, bits: int,
                  stationary: list[bool], state: bool) -> GemmComparison:
    ours, fixed, per_spike = _spiking_side(g, spiking, steps=steps, bits=bits,
                                           stationary=stationary, state=state)
    theirs = _integer_side(g, integer)
    return GemmComparison(
        name=g.name, macs=g.integer_op().macs, accumulates=g.accumulates, spikes=g.spikes,
        neurons=g.neurons, spike_rate=g.spikes / (g.neurons * steps), integer=theirs,
        spiking=ours, fixed_pj=fixed, pj_per_spike=per_spike,
        break_even_rate=break_even_rate(integer_pj=theirs.total_pj, fixed_pj=fixed,
                                        pj_per_spike=per_spike, neurons=g.neurons,
                                        steps=steps),
        stationary_on_chip=stationary, state_on_chip=state)


def _summed(sides: list[SideCost]) -> SideCost:
    energy: dict[str, float] = {}
    for side in sides:
        for part, pj in side.energy_pj.items():
            energy[part] = energy.get(part, 0.0) + pj
    return SideCost(operations=sum(s.operations for s in sides),
                    cycles=sum(s.cycles for s in sides),
                    compute_cycles=sum(s.compute_cycles for s in sides),
                    dram_bytes=sum(s.dram_bytes for s in sides),
                    sram_bytes=sum(s.sram_bytes for s in sides), energy_pj=energy,
                    total_pj=sum(energy.values()))


def _totals(rows: list[GemmComparison], gemms: Sequence[SpikeGemm], integer: Arch,
            spiking: Arch, *, steps: int, levels: int | None, bits: int) -> SpikingComparison:
    """The whole list: sums, the overall break-even rate (every GEMM's spikes scaled by one
    factor, so the measured mix), latency, and the adders and area of equal throughput."""
    ints, spks = _summed([r.integer for r in rows]), _summed([r.spiking for r in rows])
    spikes, neurons = sum(r.spikes for r in rows), sum(r.neurons for r in rows)
    fixed = sum(r.fixed_pj for r in rows)
    adds = spks.operations + NEURON_ADDS * steps * sum(g.states for g in gemms)
    adder_um2 = spiking.tech.add32_um2 + ADDER_FLOPS * spiking.tech.flop_um2
    equal = math.ceil(adds / ints.cycles)
    link = math.ceil(spks.dram_bytes / spiking.bytes_per_cycle)
    macs = sum(r.macs for r in rows)
    return SpikingComparison(
        integer_arch=integer.name, spiking_arch=spiking.name, tech=spiking.tech.name,
        steps=steps, levels=levels, spike_bits=bits, macs=macs, accumulates=spks.operations,
        accumulates_per_mac=spks.operations / macs, spikes=spikes,
        spike_rate=spikes / (neurons * steps),
        break_even_rate=_group_break_even(rows, steps=steps),
        fixed_share=fixed / ints.total_pj, energy_ratio=spks.total_pj / ints.total_pj,
        integer=ints, spiking=spks,
        latency_ms={"integer": ints.cycles / (integer.clock_mhz * 1e3),
                    "spiking": spks.cycles / (spiking.clock_mhz * 1e3)},
        adders={"array": spiking.macs, "equal_throughput": equal,
                "link_cycles": link, "integer_cycles": ints.cycles,
                "link_allows_equal_throughput": link <= ints.cycles},
        area_mm2={"mac_array": integer.macs * integer.tech.mac_um2 / 1e6,
                  "adder_array": spiking.macs * adder_um2 / 1e6,
                  "equal_throughput_adders": equal * adder_um2 / 1e6},
        gemms=rows)


def at_rate(gemms: Sequence[SpikeGemm], rate: float, *, steps: int) -> list[SpikeGemm]:
    """`gemms` with every feed's spikes scaled by one factor so that the rate over all fed
    neurons is `rate` (the measured mix kept; uniform where nothing fired): what a run at that
    rate would cost, e.g. at its break-even rate."""
    if rate < 0 or steps < 1:
        raise UserInputError(f"rate must be at least 0 and steps at least 1, got {rate} and "
                             f"{steps}")
    spikes = sum(g.spikes for g in gemms)
    target = rate * sum(g.neurons for g in gemms) * steps

    def scaled(feed: SpikeFeed) -> float:
        return feed.spikes * target / spikes if spikes > 0 else rate * feed.neurons * steps

    return [replace(g, feeds=tuple(replace(f, spikes=scaled(f)) for f in g.feeds))
            for g in gemms]


def _group_break_even(rows: Sequence[GemmComparison], *, steps: int) -> float:
    """The break-even rate of several GEMMs together: their spikes scaled by one factor (the
    measured mix; by neurons where nothing fired)."""
    spikes = sum(r.spikes for r in rows)
    weights = [r.spikes for r in rows] if spikes > 0 else [r.neurons for r in rows]
    per_spike = sum(w * r.pj_per_spike for w, r in zip(weights, rows, strict=True)) / \
        sum(weights)
    return break_even_rate(integer_pj=sum(r.integer.total_pj for r in rows),
                           fixed_pj=sum(r.fixed_pj for r in rows), pj_per_spike=per_spike,
                           neurons=sum(r.neurons for r in rows), steps=steps)


@dataclass
class GroupCost(Record):
    """Several GEMMs of one comparison together (e.g. one kind across the layers)."""

    gemms: int
    macs: int
    accumulates: float
    spike_rate: float
    break_even_rate: float
    integer_uj: float
    spiking_uj: float
    integer_dram_bytes: float
    spiking_dram_bytes: float
    stationary_streamed: int  # feeds whose stationary operand streams every step
    states_spilled: int  # GEMMs whose accumulators and membranes spill every step


def grouped(result: SpikingComparison, key) -> dict[str, GroupCost]:
    """`result`'s GEMMs gathered by `key(name)` (e.g. the kind after a layer's index), in
    first-seen order, each group's totals and break-even rate."""
    groups: dict[str, list[GemmComparison]] = {}
    for row in result.gemms:
        groups.setdefault(key(row.name), []).append(row)
    return {name: GroupCost(
        gemms=len(rows), macs=sum(r.macs for r in rows),
        accumulates=sum(r.accumulates for r in rows),
        spike_rate=sum(r.spikes for r in rows) / (sum(r.neurons for r in rows) * result.steps),
        break_even_rate=_group_break_even(rows, steps=result.steps),
        integer_uj=sum(r.integer.total_pj for r in rows) * 1e-6,
        spiking_uj=sum(r.spiking.total_pj for r in rows) * 1e-6,
        integer_dram_bytes=sum(r.integer.dram_bytes for r in rows),
        spiking_dram_bytes=sum(r.spiking.dram_bytes for r in rows),
        stationary_streamed=sum(not kept for r in rows for kept in r.stationary_on_chip),
        states_spilled=sum(not r.state_on_chip for r in rows))
        for name, rows in groups.items()}

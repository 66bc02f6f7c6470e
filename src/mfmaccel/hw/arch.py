"""What an integer accelerator is made of, in the terms the performance model needs: one MAC
array, three on-chip buffers, an off-chip link, a clock, a set of non-linear units, and the
technology that prices each operation and each byte moved.

Technology tables (dynamic energy only; leakage is not modelled):
- 45 nm: M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014,
  at 0.9 V: 8-bit multiply 0.2 pJ and 282 um^2, 32-bit add 0.1 pJ and 137 um^2, 32-bit
  multiply 3.1 pJ and 3495 um^2; 64-bit SRAM reads of 10 / 20 / 100 pJ from 8 KB / 32 KB /
  1 MB arrays; DRAM 1.3-2.6 nJ per 64 bits (we take the low end).
  Flip-flops: DFF_X1 of the Nangate 45 nm Open Cell Library, 4.522 um^2.
  SRAM area: the 0.346 um^2 6T cell of Intel's 45 nm process (Mistry et al., IEDM 2007), at an
  assumed array efficiency of 50% (periphery, sense amplifiers).
- 65 nm: the 45 nm figures scaled to first order (constant-field scaling, Dennard et al.
  1974): capacitance with feature size and energy with C V^2 at 1.0 V against 0.9 V, so energy
  x (65/45) (1.0/0.9)^2 = 1.78 and area x (65/45)^2 = 2.09. DRAM energy is off chip and stays.

Non-linear units are priced by what their integer algorithms (`hw.intops`) do per element, as
counts of 32-bit multiplies and adds; a divider is counted as 32 adds (one per quotient bit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum

from mfmaccel.errors import UserInputError

KIB = 1024


@dataclass(frozen=True)
class Technology:
    name: str
    mac_pj: float  # int8 x int8 multiply + int32 accumulate
    mult32_pj: float
    add32_pj: float
    sram_pj_per_byte: tuple[tuple[int, float], ...]  # (array bytes, pJ per byte read or written)
    dram_pj_per_byte: float
    mac_um2: float  # multiplier + adder + int32 accumulator register
    mult32_um2: float
    add32_um2: float
    flop_um2: float
    sram_um2_per_byte: float

    def sram_energy(self, buffer_bytes: int) -> float:
        """pJ per byte for an array of this size: log-log interpolation between the table's
        points (larger arrays have longer bit lines), clamped at both ends."""
        points = self.sram_pj_per_byte
        if buffer_bytes <= points[0][0]:
            return points[0][1]
        for (size_a, pj_a), (size_b, pj_b) in zip(points, points[1:], strict=False):
            if buffer_bytes <= size_b:
                t = math.log(buffer_bytes / size_a) / math.log(size_b / size_a)
                return pj_a * (pj_b / pj_a) ** t
        return points[-1][1]


def _horowitz_45nm() -> Technology:
    flop = 4.522
    return Technology(
        name="45nm", mac_pj=0.2 + 0.1, mult32_pj=3.1, add32_pj=0.1,
        sram_pj_per_byte=((8 * KIB, 10 / 8), (32 * KIB, 20 / 8), (1024 * KIB, 100 / 8)),
        dram_pj_per_byte=1300 / 8,
        mac_um2=282 + 137 + 32 * flop, mult32_um2=3495, add32_um2=137, flop_um2=flop,
        sram_um2_per_byte=8 * 0.346 / 0.5,
    )


def scaled(tech: Technology, name: str, energy: float, area: float) -> Technology:
    """`tech` at another node: on-chip energies x `energy`, areas x `area`."""
    return replace(
        tech, name=name, mac_pj=tech.mac_pj * energy, mult32_pj=tech.mult32_pj * energy,
        add32_pj=tech.add32_pj * energy,
        sram_pj_per_byte=tuple((s, pj * energy) for s, pj in tech.sram_pj_per_byte),
        mac_um2=tech.mac_um2 * area, mult32_um2=tech.mult32_um2 * area,
        add32_um2=tech.add32_um2 * area, flop_um2=tech.flop_um2 * area,
        sram_um2_per_byte=tech.sram_um2_per_byte * area,
    )


TECH_45NM = _horowitz_45nm()
TECH_65NM = scaled(TECH_45NM, "65nm", energy=(65 / 45) * (1.0 / 0.9) ** 2, area=(65 / 45) ** 2)
TECHNOLOGIES = {t.name: t for t in (TECH_45NM, TECH_65NM)}

# Per element: (32-bit multiplies, 32-bit adds) of each unit's integer algorithm.
UNIT_OPS: dict[str, tuple[int, int]] = {
    "softmax": (1, 3 + 32),  # i-exp square, range reduction, sum, divide
    "layernorm": (2, 4 + 32),  # square for the variance, the normalising multiply, divide
    "rmsnorm": (2, 3 + 32),
    "gelu": (2, 4),  # i-GELU: square, product with x
    "silu": (2, 4 + 32),  # i-exp, sigmoid's divide, product with x
    "add": (1, 2),  # align one operand (dyadic multiply), add, saturate
    "requant": (1, 1),  # dyadic multiply and rounding shift, per GEMM output
    "rotary": (2, 1),  # x cos + rotate(x) sin
    "token_shift": (0, 3),  # the integer programs' per-token scale: row maximum, shift, round
    "copy": (0, 0),  # a layer's inputs loaded or outputs stored by a program of its own
}
ALL_UNITS = tuple(UNIT_OPS)
# the units a float model's workload names (the others only appear in integer programs)
MODEL_UNITS = tuple(unit for unit in ALL_UNITS if unit not in ("token_shift", "copy"))


class Attention(StrEnum):
    """How attention's score rows meet the buffers."""

    tiled = "tiled"  # online softmax over tiles of keys
    full = "full"  # whole score rows on chip


class Fusion(StrEnum):
    """What a schedule may keep on chip between operations (`hw.fusion`): each kind is a fused
    schedule the controller supports; the simulator takes it per operation where it moves fewer
    off-chip bytes than the unfused one. Requantization is always in the GEMM's output path
    (the RTL engine `hw.rtl.gemm` has it), so it is no choice."""

    activation = "activation"  # GELU/SiLU on a GEMM's outputs before they leave the chip
    norm = "norm"  # residual add and norm in the epilogue of the GEMM before them
    attention = "attention"  # scores never leave the chip (online softmax over key tiles)
    mlp = "mlp"  # the MLP's intermediate held on chip per row tile


FUSION_KINDS = tuple(kind.value for kind in Fusion)
# Named sets for the command line: `--fusion all`, `--fusion epilogue`, or kinds with commas.
FUSION_SETS = {"none": (), "epilogue": ("activation", "norm"), "all": FUSION_KINDS}
# What the model assumed before fusion became a choice (issue 23): activations fused into the
# GEMM's output path and attention's scores on chip; norms, adds and the MLP unfused.
DEFAULT_FUSION = ("activation", "attention")


class ArrayKind(StrEnum):
    """What the array's cells do with an operand pair."""

    mac = "mac"  # int8 x int8 multiply, int32 accumulate: the integer accelerator
    # add only: each unit spike adds one row of weights into int32 accumulators, the neurons'
    # membranes kept in SRAM (`hw.spiking_array`); prices spike-fed GEMMs, not a workload
    accumulate = "accumulate"


def parse_fusion(text: str) -> tuple[str, ...]:
    """'none', 'epilogue', 'all' or kinds joined by commas ('attention,mlp') as a tuple of
    kinds in FUSION_KINDS' order; anything else names the values that work."""
    if text.strip() in FUSION_SETS:
        return FUSION_SETS[text.strip()]
    kinds = {part.strip() for part in text.split(",") if part.strip()}
    unknown = kinds - set(FUSION_KINDS)
    if unknown or not kinds:
        raise UserInputError(f"fusion '{text}': use none, epilogue, all or a comma list of "
                             f"{', '.join(FUSION_KINDS)}")
    return tuple(kind for kind in FUSION_KINDS if kind in kinds)


@dataclass(frozen=True)
class Arch:
    """One accelerator configuration. Buffers hold int8 operands (A: activations, B: weights)
    and the output tile (int32 partial sums); `bandwidth_gbs` is the off-chip link."""

    name: str
    rows: int  # MAC array: rows of A (output rows) it works on at once
    cols: int  # columns of B (output columns)
    a_buffer_kib: float
    b_buffer_kib: float
    out_buffer_kib: float
    bandwidth_gbs: float
    clock_mhz: float
    tech: Technology = TECH_45NM
    vector_lanes: int = 16  # elements per cycle of each non-linear unit
    units: tuple[str, ...] = MODEL_UNITS
    interconnect: str = "broadcast"  # "broadcast" (our RTL, SwiftTron) or "systolic"
    dataflows: tuple[str, ...] = ("os", "ws")
    attention: str = "tiled"  # an `Attention`
    fusion: tuple[str, ...] = DEFAULT_FUSION  # `Fusion` kinds the schedules may use
    bank_kib: float = 32  # buffers are banks of this size: an access costs one bank's energy
    # None: GEMM operands stream through double-buffered tiles from off-chip memory, overlapped
    # with compute. A number: activations live in an on-chip scratchpad and every GEMM's
    # operands and outputs are copied in and out of the engine's buffers at this many elements
    # per cycle, before and after it computes (the RTL top, `hw.rtl.top`)
    operand_fill: float | None = None
    # with operand_fill: B goes through the engine this many output columns at a time, in two
    # banks, so a chunk's copies overlap the previous chunk's compute (None: no overlap)
    fill_chunk: int | None = None
    # units that pass over a row several times (a streaming unit: softmax's max, sum, divide;
    # a norm's statistics): (unit, passes, extra cycles per row); others take one pass
    unit_rows: tuple[tuple[str, int, int], ...] = ()
    array: str = "mac"  # an `ArrayKind`: the integer MAC array, or the spiking variant's
    notes: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for name in ("rows", "cols", "vector_lanes"):
            if getattr(self, name) < 1:
                raise UserInputError(f"arch {self.name}: {name} must be at least 1, got "
                                     f"{getattr(self, name)}")
        for name in ("a_buffer_kib", "b_buffer_kib", "out_buffer_kib", "bandwidth_gbs",
                     "clock_mhz", "bank_kib"):
            if not getattr(self, name) > 0:
                raise UserInputError(f"arch {self.name}: {name} must be positive, got "
                                     f"{getattr(self, name)}; the smallest that works is any "
                                     f"value above 0")
        if self.operand_fill is not None and not self.operand_fill > 0:
            raise UserInputError(f"arch {self.name}: operand_fill must be positive (elements "
                                 f"per cycle), got {self.operand_fill}")
        unknown = set(self.units) - set(ALL_UNITS)
        if unknown:
            raise UserInputError(f"arch {self.name}: unknown unit(s) {sorted(unknown)}; "
                                 f"known: {', '.join(ALL_UNITS)}")
        if self.interconnect not in ("broadcast", "systolic"):
            raise UserInputError(f"arch {self.name}: interconnect must be 'broadcast' or "
                                 f"'systolic', got '{self.interconnect}'")
        if not self.dataflows or set(self.dataflows) - {"os", "ws"}:
            raise UserInputError(f"arch {self.name}: dataflows must be a non-empty subset of "
                                 f"('os', 'ws'), got {self.dataflows}")
        if self.attention not in tuple(Attention):
            raise UserInputError(f"arch {self.name}: attention must be 'tiled' or 'full', got "
                                 f"'{self.attention}'")
        if self.array not in tuple(ArrayKind):
            raise UserInputError(f"arch {self.name}: array must be 'mac' or 'accumulate', got "
                                 f"'{self.array}'")
        if set(self.fusion) - set(FUSION_KINDS):
            raise UserInputError(f"arch {self.name}: fusion must be a subset of "
                                 f"{FUSION_KINDS}, got {tuple(self.fusion)}")

    def fuses(self, kind: str) -> bool:
        return kind in self.fusion

    @property
    def macs(self) -> int:
        return self.rows * self.cols

    @property
    def bytes_per_cycle(self) -> float:
        """Off-chip bytes per clock cycle."""
        return self.bandwidth_gbs * 1e3 / self.clock_mhz

    def buffer_bytes(self, which: str) -> int:
        return int(getattr(self, f"{which}_buffer_kib") * KIB)

    def sram_pj_per_byte(self, which: str) -> float:
        """Energy of one byte in or out of a buffer: one bank's access energy."""
        return self.tech.sram_energy(min(self.buffer_bytes(which), int(self.bank_kib * KIB)))


PRESETS: dict[str, Arch] = {
    arch.name: arch
    for arch in (
        Arch("swifttron", rows=8, cols=768, a_buffer_kib=768, b_buffer_kib=4608,
             out_buffer_kib=768, bandwidth_gbs=51.2, clock_mhz=250, tech=TECH_65NM,
             vector_lanes=64, units=("softmax", "layernorm", "gelu", "add", "requant"),
             dataflows=("os",), attention="full",
             notes="SwiftTron-like (Marchisio et al. 2023): its largest array (8x768, output-"
                   "stationary, broadcast), its units (no SiLU, RMSNorm or rotary), 65 nm. "
                   "Not published, so chosen here: 250 MHz, 64 lanes per non-linear unit, "
                   "buffers holding six 768x768 int8 matrices, two DDR4-3200 channels"),
        Arch("edge", rows=16, cols=16, a_buffer_kib=64, b_buffer_kib=128, out_buffer_kib=64,
             bandwidth_gbs=8.5, clock_mhz=400, vector_lanes=4,
             notes="edge: 256 MACs, 256 KiB on chip, one LPDDR4x-class 32-bit channel"),
        Arch("large", rows=64, cols=64, a_buffer_kib=1024, b_buffer_kib=4096,
             out_buffer_kib=1024, bandwidth_gbs=100, clock_mhz=800, vector_lanes=64,
             notes="large: 4,096 MACs, 6 MiB on chip, an HBM2-class link"),
    )
}


# The presets' names as a choice (members are the names, in PRESETS' order).
ArchPreset = StrEnum("ArchPreset", [(name, name) for name in PRESETS])


def get_arch(name: str) -> Arch:
    if name not in PRESETS:
        raise UserInputError(f"unknown architecture preset '{name}'; available: "
                             f"{', '.join(PRESETS)}")
    return PRESETS[name]


def spiking_variant(arch: Arch) -> Arch:
    """`arch` with an accumulate-only array of the same rows x cols, buffers, link, clock and
    technology (named `<name>-spiking`): the spiking accelerator `hw.spiking_array` prices
    against `arch`. Its neurons update membranes at `vector_lanes` a cycle, at least one per
    array column: a neuron stands where the integer array has its per-column requantizer."""
    if arch.array != ArrayKind.mac:
        raise UserInputError(f"arch {arch.name} is already a spiking variant (array "
                             f"'{arch.array}'); give the integer accelerator it derives from")
    return replace(arch, name=f"{arch.name}-spiking", array=ArrayKind.accumulate.value,
                   vector_lanes=max(arch.vector_lanes, arch.cols),
                   notes=f"{arch.name} with an accumulate-only array (spike-fed GEMMs), "
                         f"membrane state in SRAM")


def customized_arch(name: str, **overrides: object) -> Arch:
    """The preset `name` with the fields given in `overrides` (a None keeps the preset's), as a
    user adjusts a preset from the command line."""
    given = {key: value for key, value in overrides.items() if value is not None}
    preset = get_arch(name)
    return replace(preset, **given) if given else preset

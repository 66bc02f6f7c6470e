"""The records of a co-design (`hw.codesign`): the bit assignments, the points priced on the
front, and the whole run as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field

from mfmaccel.records import Record


@dataclass
class BitAssignment(Record):
    name: str  # "uniform-4", "mixed-3"
    bits: dict[str, int]  # block (or, at the module tier, part) -> bits
    weight_bytes: int  # the parts' packed integers, scales and zero points
    average_bits: float  # of those bytes, per weight
    predicted: float  # the block tier's sum: KL (or cosine distance) per token
    origin: str  # "uniform", "bytes <= N" or "fewest bytes at uniform-B's quality"
    network: float | None = None  # uniform: the network tier's measurement


@dataclass
class CodesignPoint(Record):
    assignment: str
    design: int  # index in the space (`describe` gives it in words)
    predicted: float
    latency_ms: float
    energy_mj: float
    area_mm2: float
    power_mw: float
    params: str = ""


@dataclass
class Codesign(Record):
    model: str
    workload: str
    signal: str  # "kl" or "cosine"
    calibration_tokens: int
    heldout_tokens: int
    bits: list[int]
    tier: str  # "block" or "module": what one bit-width covers
    space: dict
    designs: int
    assignments: list[BitAssignment]
    front: list[CodesignPoint]
    uniform: list[dict]  # per uniform assignment: its design front, each with a dominator
    checks: list[dict]  # assignment, predicted, measured on held-out data
    dominance_measured: list[dict]  # uniform vs its checked dominator, both measured
    seconds: dict[str, float] = field(default_factory=dict)

"""The operations the accelerator runs, as plain records: GEMMs, element-wise and row-wise
operations, and a workload (the list of them for one forward pass).

Apart from `hw.workload`, which reads them off a real forward pass, so that the performance
model, the design-space sweep and its workers import no torch model code: a sweep's worker
process starts in the time its imports take.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

DEFAULT_BITS = 8  # the accelerator computes int8 x int8; float weights are stored as int8
GEMM_ROLES = ("projection", "attention-score", "attention-context", "ffn", "head", "conv")


@dataclass(frozen=True)
class Gemm:
    """`batch` independent (m x k) @ (k x n) products, `count` times. `weight_bits` is None when
    both operands are activations (attention), else the bits of the stored weight."""

    role: str
    m: int
    n: int
    k: int
    batch: int = 1
    weight_bits: int | None = DEFAULT_BITS
    count: int = 1
    where: str = ""

    @property
    def macs(self) -> int:
        return self.m * self.n * self.k * self.batch * self.count


@dataclass(frozen=True)
class VectorOp:
    """An element-wise or row-wise operation on `rows` rows of `length` elements, `count` times;
    `unit` names the non-linear unit that runs it."""

    unit: str
    rows: int
    length: int
    count: int = 1
    where: str = ""

    @property
    def elements(self) -> int:
        return self.rows * self.length * self.count


Op = Gemm | VectorOp


@dataclass
class Workload:
    model: str
    description: str
    ops: list[Op] = field(default_factory=list)

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops if isinstance(op, Gemm))

    def merged(self) -> Workload:
        """Identical operations folded into one with a count (fewer to map; same totals)."""
        counts: Counter[Op] = Counter()
        for op in self.ops:
            counts[replace(op, count=1, where="")] += op.count
        ops = [replace(op, count=n) for op, n in counts.items()]
        return Workload(self.model, self.description, ops)

"""Mixed precision: give each part the fewest bits it tolerates within a byte budget.

The search is tiered like the sensitivity it reads: the network tier gives the uniform
baselines; the block tier chooses one bit-width per block (exact integer program over the
blocks' measured KL); the module tier then refines each block's modules within one step of
their block's choice (again an exact integer program). Sensitivities are taken as additive,
which is what makes an exact knapsack possible; `verify` checks chosen points for real.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from mfmaccel.compress.sensitivity import Sensitivity
from mfmaccel.errors import UserInputError
from mfmaccel.records import Record
from mfmaccel.runtime.grid import QuantSpec
from mfmaccel.runtime.parts import Part
from mfmaccel.runtime.plan import FULL

FP16_BYTES = 2


@dataclass
class Assignment(Record):
    """A label (QuantSpec label or "fp16") per part, what it costs and what it is predicted
    to do to the KL."""

    choice: dict[str, str]
    weight_bytes: int  # of the quantizable parts
    predicted_kl: float
    tier: str = "module"
    extra: dict = field(default_factory=dict)

    def average_bits(self, parts: dict[str, Part]) -> float:
        return 8 * self.weight_bytes / sum(p.params for p in parts.values())


def part_bytes(part: Part, label: str, specs: dict[str, QuantSpec]) -> int:
    if label == FULL:
        return part.params * FP16_BYTES
    return specs[label].nbytes(part.out_features, part.in_features)


def solve_knapsack(costs: np.ndarray, kls: np.ndarray, groups: list[list[int]],
                   budget: float) -> list[int]:
    """Exact: pick one option per group, minimising total KL with total cost <= budget."""
    count = len(costs)
    constraints = [LinearConstraint(costs[None, :], -np.inf, budget)]
    one_each = np.zeros((len(groups), count))
    for row, members in enumerate(groups):
        one_each[row, members] = 1
    constraints.append(LinearConstraint(one_each, 1, 1))
    scale = float(kls.max()) or 1.0  # well-scaled objective: tiny KLs still count
    result = milp(kls / scale, constraints=constraints, integrality=np.ones(count),
                  bounds=Bounds(0, 1), options={"time_limit": 30})
    if result.x is None:
        raise UserInputError("no assignment fits the budget")
    return [int(i) for i in np.flatnonzero(result.x > 0.5)]


class MixedSearch:
    """Tiered search over one sensitivity table."""

    def __init__(self, parts: dict[str, Part], sensitivity: Sensitivity,
                 keep_full: bool = True) -> None:
        self.parts = parts
        self.sensitivity = sensitivity
        self.specs = {label: QuantSpec(**fields) for label, fields in sensitivity.specs.items()}
        self.labels = sorted(self.specs, key=lambda lab: self.specs[lab].bits)
        if keep_full:
            self.labels.append(FULL)
        self.blocks: dict[str, list[str]] = {}
        for name, part in parts.items():
            self.blocks.setdefault(part.block, []).append(name)

    def kl(self, level: dict[str, dict[str, float]], key: str, label: str) -> float:
        return 0.0 if label == FULL else max(level[key][label], 0.0)

    def full_bytes(self) -> int:
        return sum(p.params * FP16_BYTES for p in self.parts.values())

    def minimum_bytes(self) -> int:
        return sum(min(part_bytes(p, lab, self.specs) for lab in self.labels)
                   for p in self.parts.values())

    def uniform(self, label: str) -> Assignment:
        choice = {name: label for name in self.parts}
        return self._assignment(choice, "network", self.sensitivity.network.get(label, 0.0))

    def _assignment(self, choice: dict[str, str], tier: str, kl: float | None = None) -> Assignment:
        size = sum(part_bytes(self.parts[n], lab, self.specs) for n, lab in choice.items())
        predicted = kl if kl is not None else sum(
            self.kl(self.sensitivity.modules, n, lab) for n, lab in choice.items())
        return Assignment(choice, size, predicted, tier)

    def _check(self, budget: float) -> None:
        smallest = self.minimum_bytes()
        if budget < smallest:
            raise UserInputError(
                f"budget of {int(budget):,} bytes is below the smallest model these bit-widths "
                f"can build ({smallest:,} bytes of quantizable weights); raise the budget or add "
                "a lower bit-width"
            )

    def by_block(self, budget: float) -> Assignment:
        """One bit-width per block (block-tier KL), within `budget` bytes."""
        self._check(budget)
        options = [(block, lab) for block in self.blocks for lab in self.labels]
        costs = np.array([sum(part_bytes(self.parts[n], lab, self.specs) for n in
                              self.blocks[block]) for block, lab in options], dtype=float)
        kls = np.array([self.kl(self.sensitivity.blocks, block, lab) for block, lab in options])
        groups = [[i for i, (b, _) in enumerate(options) if b == block] for block in self.blocks]
        picked = [options[i] for i in solve_knapsack(costs, kls, groups, budget)]
        choice = {n: lab for block, lab in picked for n in self.blocks[block]}
        return self._assignment(choice, "block")

    def by_module(self, budget: float, start: Assignment | None = None) -> Assignment:
        """Per-module bit-widths, each within one step of its block-tier choice."""
        start = start or self.by_block(budget)
        options = []
        for name, label in start.choice.items():
            at = self.labels.index(label)
            for near in self.labels[max(0, at - 1): at + 2]:
                options.append((name, near))
        costs = np.array([part_bytes(self.parts[n], lab, self.specs) for n, lab in options],
                         dtype=float)
        kls = np.array([self.kl(self.sensitivity.modules, n, lab) for n, lab in options])
        index: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(options):
            index.setdefault(name, []).append(i)
        picked = [options[i] for i in solve_knapsack(costs, kls, list(index.values()), budget)]
        return self._assignment(dict(picked), "module")

    def front(self, budgets: Sequence[float]) -> list[Assignment]:
        """The module-tier assignment at each budget that is feasible."""
        points = []
        for budget in budgets:
            if budget >= self.minimum_bytes():
                point = self.by_module(budget)
                point.extra["budget"] = int(budget)
                points.append(point)
        return points

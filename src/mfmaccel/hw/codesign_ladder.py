"""The bit assignments a co-design prices, built from a sensitivity without enumerating bit
combinations: every part at one bit-width (uniform), `compress.mixed`'s exact knapsack at byte
budgets from the smallest model to the largest, and for each uniform assignment the fewest
bytes at its predicted quality or better.

At the block tier every linear of a block shares its bits (`MixedSearch.by_block`) and the
prediction is the sum of the blocks' measured KL; at the module tier each linear may then move
one step from its block's choice (`MixedSearch.by_module`) and the prediction sums the
module tier's shares (which add up to the block's KL, so uniform assignments predict the same
at both tiers).
"""

from __future__ import annotations

import numpy as np

from mfmaccel.compress.mixed import MixedSearch, part_bytes
from mfmaccel.errors import UserInputError
from mfmaccel.hw.codesign_records import BitAssignment

TIERS = ("block", "module")


class Ladder:
    """Assignments over one search, at one tier."""

    def __init__(self, search: MixedSearch, tier: str = "block") -> None:
        if tier not in TIERS:
            raise UserInputError(f"--tier {tier}: choose block or module")
        self.search = search
        self.tier = tier
        self.label_of = {spec.bits: label for label, spec in search.specs.items()}

    def assignments(self, steps: int) -> list[BitAssignment]:
        """Uniform assignments, the knapsack's at `steps` budgets and the fewest bytes at each
        uniform one's quality; duplicates dropped (uniform ones kept), mixed ones numbered by
        their bytes."""
        search = self.search
        found = [self._assignment(dict.fromkeys(search.parts, label), "uniform",
                                  search.sensitivity.network[label]) for label in search.labels]
        low, high = search.minimum_bytes(), max(a.weight_bytes for a in found)
        for budget in np.linspace(low, high, steps):
            found.append(self._by_budget(float(budget), f"bytes <= {int(budget)}"))
        for uniform in found[1:len(search.labels)]:
            cheaper = self._fewest_bytes(uniform, low)
            if cheaper is not None:
                found.append(cheaper)
        unique: dict[tuple, BitAssignment] = {}
        for a in found:
            unique.setdefault(tuple(sorted(self.part_bits(a).items())), a)
        mixed = sorted((a for a in unique.values() if a.origin != "uniform"),
                       key=lambda a: a.weight_bytes)
        for number, a in enumerate(mixed):
            a.name = f"mixed-{number}"
        return [a for a in unique.values() if a.origin == "uniform"] + mixed

    def part_bits(self, assignment: BitAssignment) -> dict[str, int]:
        """Part -> bits (an assignment names blocks at the block tier, parts at the module)."""
        out = {}
        for unit, bits in assignment.bits.items():
            for name in self.search.blocks.get(unit, [unit]):
                out[name] = bits
        return out

    def part_labels(self, assignment: BitAssignment) -> dict[str, str]:
        return {n: self.label_of[b] for n, b in self.part_bits(assignment).items()}

    def _by_budget(self, budget: float, origin: str) -> BitAssignment:
        solve = self.search.by_block if self.tier == "block" else self.search.by_module
        return self._assignment(solve(budget).choice, origin)

    def _fewest_bytes(self, uniform: BitAssignment, low: int) -> BitAssignment | None:
        """The smallest budget whose knapsack assignment predicts no worse than `uniform`
        (bisection: the best prediction improves as the budget grows)."""
        lo, hi, best = float(low), float(uniform.weight_bytes), None
        while hi - lo >= 1:
            middle = (lo + hi) / 2
            candidate = self._by_budget(middle, f"fewest bytes at {uniform.name}'s quality")
            if candidate.predicted <= uniform.predicted:
                hi, best = middle, candidate
            else:
                lo = middle
        return best

    def _assignment(self, choice: dict[str, str], origin: str,
                    network: float | None = None) -> BitAssignment:
        """An assignment from a label per part: its bytes and additive predicted quality."""
        search = self.search
        size = sum(part_bytes(search.parts[n], lab, search.specs) for n, lab in choice.items())
        weights = sum(p.params for p in search.parts.values())
        if self.tier == "block":
            labels = {search.parts[n].block: lab for n, lab in choice.items()}
            predicted = sum(search.kl(search.sensitivity.blocks, b, lab)
                            for b, lab in labels.items())
        else:
            labels = dict(choice)
            predicted = sum(search.kl(search.sensitivity.modules, n, lab)
                            for n, lab in choice.items())
        bits = {unit: search.specs[lab].bits for unit, lab in labels.items()}
        name = f"uniform-{next(iter(bits.values()))}" if origin == "uniform" else ""
        return BitAssignment(name, bits, size, 8 * size / weights, predicted, origin, network)

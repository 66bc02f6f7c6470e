"""Mixed precision measured around a uniform assignment: which blocks may drop one bit-width
and which must rise, so that the whole holds fewer bytes and measures no worse than every
block at b bits.

The block tier of `compress.sensitivity` measures each block alone, the others in full
precision, and adds the blocks up. At low bit-widths the blocks' damage compounds, so a
mixture that predicts better than uniform b bits can measure worse (hw.codesign's first
record: 1 of 6 checked pairs held). Here each block's move one step down or up is measured
with every other block already at b bits (from the uniform model's own block inputs); the
fewest-bytes set of moves whose summed changes stay below the uniform model's signal by a
margin is solved exactly, then measured whole on the same calibration text. When it misses,
the allowance tightens by the miss and the set is solved again, a few times at most.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mfmaccel.compress.fakequant import rtn_weight
from mfmaccel.compress.mixed import part_bytes, solve_knapsack
from mfmaccel.compress.prober import Prober, first_block_to_rerun
from mfmaccel.errors import UserInputError
from mfmaccel.progress import counter
from mfmaccel.records import Record
from mfmaccel.runtime.grid import QuantSpec


@dataclass
class Neighbours(Record):
    """Moves around uniform `center` bits, measured in context, and the mixture they give."""

    center: str  # the uniform assignment's label
    signal: str  # "kl" or "cosine", per calibration token
    tokens: int
    center_measured: float  # every part at `center`, on the calibration text
    center_bytes: int  # every part at `center`
    tier: str  # "block" or "module": what one move covers
    moves: dict[str, dict[str, float]]  # block or part -> neighbouring label -> signal change
    tries: list[dict]  # per solve: allowance, predicted change, bytes, measured
    choice: dict[str, str] | None  # part -> label of the mixture that measured better, or None
    margin: float  # the mixture must measure this share below the uniform one
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def measured(self) -> float | None:
        """The chosen mixture's signal on the calibration text."""
        return self.tries[-1]["measured"] if self.choice is not None else None


class SwappedWeights:
    """Each part's round-to-nearest weight at each label, computed once from the original
    weights and swapped in and out by reference (a nested swap never requantizes a swapped
    weight)."""

    def __init__(self, parts: dict, specs: dict[str, QuantSpec]) -> None:
        self.parts = parts  # name -> (Part, module)
        self.specs = specs
        self.originals = {name: layer.weight.data for name, (_, layer) in parts.items()}
        self._cache: dict[tuple[str, str], torch.Tensor] = {}

    def weight(self, name: str, label: str) -> torch.Tensor:
        """Part `name`'s weight at `label`, rounded from its original weight."""
        key = (name, label)
        if key not in self._cache:
            layer = self.parts[name][1]
            swapped, layer.weight.data = layer.weight.data, self.originals[name]
            try:
                self._cache[key] = rtn_weight(layer, self.specs[label])
            finally:
                layer.weight.data = swapped
        return self._cache[key]

    @contextmanager
    def applied(self, choice: dict[str, str]) -> Iterator[None]:
        """Within the block, each part in `choice` computes with its weight at that label."""
        layers: dict[str, nn.Module] = {n: self.parts[n][1] for n in choice}
        chosen = {n: self.weight(n, label) for n, label in choice.items()}
        before = {n: layer.weight.data for n, layer in layers.items()}
        try:
            for name, layer in layers.items():
                layer.weight.data = chosen[name]
            yield
        finally:
            for name, layer in layers.items():
                layer.weight.data = before[name]


def neighbour_labels(labels: Sequence[str], center: str) -> list[str]:
    """The labels one step below and above `center` in `labels` (ordered by bits)."""
    at = list(labels).index(center)
    return [labels[i] for i in (at - 1, at + 1) if 0 <= i < len(labels)]


def measure_neighbours(module: nn.Module, batches: Sequence[torch.Tensor],
                       specs: Sequence[QuantSpec], center: int, *, tier: str = "block",
                       margin: float = 0.02, tries: int = 4,
                       progress: Callable[[int, int], None] | None = None) -> Neighbours:
    """Moves of each block (`tier` "module": each linear) one step around uniform `center`
    bits (`specs` holding it and its neighbours), measured on calibration `batches` with the
    rest at `center`, and the fewest-bytes mixture that measures at least `margin` below
    uniform `center` (None when `tries` solves find none)."""
    started = time.perf_counter()
    by_label = {s.label: s for s in sorted(specs, key=lambda s: s.bits)}
    labels = list(by_label)
    middle = next((lab for lab in labels if by_label[lab].bits == center), None)
    if middle is None:
        raise UserInputError(f"bit-width {center} is not among the specs "
                             f"({', '.join(labels)}); add it to --weight-bits")
    if tier not in ("block", "module"):
        raise UserInputError(f"tier {tier!r}: choose block or module")
    prober = Prober(module, batches)
    weights = SwappedWeights(prober.parts, by_label)
    blocks: dict[str, list[str]] = {}  # the unit that moves -> its parts
    block_of: dict[str, str] = {}  # and the block it reruns from
    for name, (part, _) in prober.parts.items():
        unit = part.block if tier == "block" else name
        blocks.setdefault(unit, []).append(name)
        block_of[unit] = part.block
    steps = neighbour_labels(labels, middle)
    tick = counter(progress, 1 + len(blocks) * len(steps) + tries)
    uniform = dict.fromkeys(prober.parts, middle)
    with weights.applied(uniform):
        prober.recapture()
        center_measured = prober.kl_from(None)
        tick()
        moves = {}
        for block, names in blocks.items():
            moves[block] = {}
            for label in steps:
                with weights.applied(dict.fromkeys(names, label)):
                    start = first_block_to_rerun(block_of[block], prober)
                    moves[block][label] = prober.kl_from(start) - center_measured
                tick()
        center_bytes = _bytes(weights, uniform)
        mixture, attempts = _solve_and_measure(prober, weights, blocks, moves, middle,
                                               center_measured, center_bytes, margin=margin,
                                               tries=tries, tick=tick)
    return Neighbours(center=middle, signal=prober.signal, tokens=prober.tokens,
                      center_measured=center_measured, center_bytes=center_bytes, tier=tier,
                      moves=moves, tries=attempts, choice=mixture, margin=margin,
                      seconds=time.perf_counter() - started)


def _solve_and_measure(prober: Prober, weights: SwappedWeights, blocks: dict[str, list[str]],
                       moves: dict[str, dict[str, float]], middle: str, center_measured: float,
                       full_bytes: int, *, margin: float, tries: int, tick: Callable[[], None]
                       ) -> tuple[dict[str, str] | None, list[dict]]:
    """Solve the fewest bytes under an allowance, measure, tighten by the miss; the first
    mixture that measures `margin` below the uniform one, with what each try gave."""
    target = center_measured * (1 - margin)
    allowance = target - center_measured
    attempts: list[dict] = []
    for _ in range(tries):
        picked = _fewest_bytes(weights, blocks, moves, middle, allowance)
        if picked is None:
            break
        choice, change = picked
        size = _bytes(weights, choice)
        if size >= full_bytes:  # nothing to drop within the allowance
            break
        with weights.applied({n: lab for n, lab in choice.items() if lab != middle}):
            measured = prober.kl_from(None)
        tick()
        attempts.append({"allowance": allowance, "predicted_change": change,
                         "weight_bytes": size, "measured": measured})
        if measured <= target:
            return choice, attempts
        allowance -= measured - (center_measured + change)  # the miss, taken off next time
    return None, attempts


def _fewest_bytes(weights: SwappedWeights, blocks: dict[str, list[str]],
                  moves: dict[str, dict[str, float]], middle: str, allowance: float
                  ) -> tuple[dict[str, str], float] | None:
    """Part -> label with the fewest bytes whose summed moves stay within `allowance`, and
    that sum; None when no set of moves does."""
    options = [(block, label) for block in blocks for label in (middle, *moves[block])]
    changes = np.array([0.0 if label == middle else moves[block][label]
                        for block, label in options])
    sizes = np.array([sum(part_bytes(weights.parts[n][0], label, weights.specs)
                          for n in blocks[block]) for block, label in options], dtype=float)
    groups = [[i for i, (b, _) in enumerate(options) if b == block] for block in blocks]
    try:
        chosen = solve_knapsack(changes, sizes, groups, allowance)
    except UserInputError:  # no set of moves fits the allowance
        return None
    choice = {n: label for block, label in (options[i] for i in chosen) for n in blocks[block]}
    return choice, float(changes[chosen].sum())


def _bytes(weights: SwappedWeights, choice: dict[str, str]) -> int:
    return sum(part_bytes(weights.parts[n][0], label, weights.specs)
               for n, label in choice.items())

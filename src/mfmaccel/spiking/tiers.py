"""Tiered weight quantization of a spiking DINOv2 tower (QSViT/QSLM style): the fewest weight
bits each part of medvlm's tower tolerates within a memory budget.

A settled spiking program equals its static-scale integer program bit for bit, so its weights
are the integer program's (`hw.intexec.dinov2`, per-channel symmetric grids); giving a linear
fewer bits there gives it fewer in the spiking program. The bits are chosen as compress's mixed
precision chooses them for a language model: the tower's blocks seen as an encoder
(`hw.codesign_subject.TowerEncoder`, patch embeddings computed once in float) are probed with
per-channel symmetric round-to-nearest weights at each bit-width (`compress.sensitivity`; the
signal is the cosine distance of the last block's hidden states, what LLaVA's projector reads),
block by block and linear by linear, and `compress.mixed.MixedSearch` solves one bit-width per
block (`block` tier) or per linear (`module` tier) for the least predicted damage within a
byte budget. The result is a `weight_bits` mapping for `convert_dinov2`, keyed by the names both
use (`layers.3.mlp.fc1`).

The probe quantizes the float tower's own weights; the integer program quantizes them after
LayerScale (a per-row factor: the same grid) and SmoothQuant (per-column factors: not the same
grid) are folded in, so the prediction is a proxy and the program is measured for real
(benchmarks/spiking_tiers.py).

Memory (`tower_memory`): every integer weight of the program at its bits, packed, plus one
fp16 scale per output channel, against the same weights in fp16 (2 bytes each). The patch
embedding (a 14x14 convolution, 1% of the tower's weights) is counted and stays at 8 bits;
biases, the CLS and position table and the LayerNorms' constants are not weights of a GEMM and
are left out of both sides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mfmaccel.compress.mixed import Assignment, MixedSearch
from mfmaccel.compress.sensitivity import Sensitivity, measure_sensitivity
from mfmaccel.errors import UserInputError
from mfmaccel.hw.codesign import bit_specs
from mfmaccel.hw.codesign_subject import TowerEncoder, checked_tower, embedded
from mfmaccel.hw.intexec.dinov2 import IntDinov2, check_dinov2
from mfmaccel.hw.intexec.linear import IntLinear
from mfmaccel.hw.intexec.quality import calibration_pixels
from mfmaccel.models.record import LoadedModel
from mfmaccel.records import Record
from mfmaccel.runtime.grid import QuantSpec
from mfmaccel.runtime.parts import Part, quantizable_parts

TIER_BITS = (2, 3, 4, 6, 8)
TIERS = ("block", "module")
FP16_BYTES = 2


def dinov2_tower(tower: nn.Module) -> nn.Module:
    """`tower`, refused in one line unless it is a DINOv2 the integer program covers."""
    from transformers import Dinov2Model

    if not isinstance(tower, Dinov2Model):
        raise UserInputError(f"tiered weight bits are for a DINOv2 tower (medvlm's), not a "
                             f"{type(tower).__name__}; try medvlm")
    check_dinov2(tower)
    return tower


def tier_specs(bits: Sequence[int] = TIER_BITS) -> list[QuantSpec]:
    """Per-channel symmetric round-to-nearest at each of `bits` (the integer programs' grid),
    refused in one line when a bit-width is not one the quantizer knows."""
    return bit_specs(bits, group_size=None, symmetric=True)


@dataclass
class TowerMemory(Record):
    """The program's GEMM weights: packed integers plus fp16 per-channel scales, against fp16."""

    weight_bytes: int
    fp16_bytes: int
    cut: float  # 1 - weight_bytes / fp16_bytes
    patch_bytes: int  # the patch embedding's share of weight_bytes (8 bits)
    average_bits: float  # per weight, scales included


def _linear_bytes(linear: IntLinear) -> tuple[int, int]:
    """(bytes at its bits with its scales, bytes in fp16) of one integer linear's weights."""
    out, inp = linear.weight.shape
    return QuantSpec(linear.weight_bits, None, True).nbytes(out, inp), FP16_BYTES * out * inp


def tower_memory(program: IntDinov2) -> TowerMemory:
    """What `program`'s weights take at their bits, the patch embedding included."""
    linears = [unit for layer in program.layers
               for unit in (layer.attention.query, layer.attention.key, layer.attention.value,
                            layer.attention_out, layer.intermediate, layer.output)]
    patch, patch_fp16 = _linear_bytes(program.patches.linear)
    sizes = [_linear_bytes(unit) for unit in linears]
    weight_bytes = patch + sum(b for b, _ in sizes)
    fp16 = patch_fp16 + sum(f for _, f in sizes)
    return TowerMemory(weight_bytes, fp16, 1 - weight_bytes / fp16, patch,
                       8 * weight_bytes / (fp16 / FP16_BYTES))


def patch_bytes(tower: nn.Module) -> int:
    """The patch embedding's weights at 8 bits with fp16 per-channel scales, as the program
    keeps them."""
    weight = tower.embeddings.patch_embeddings.projection.weight
    return QuantSpec(8, None, True).nbytes(weight.shape[0], weight[0].numel())


def fp16_bytes(tower: nn.Module) -> int:
    """The tower's GEMM weights (the blocks' linears and the patch embedding) in fp16."""
    linears = sum(p.params for p, _ in quantizable_parts(TowerEncoder(tower)).values())
    patch = tower.embeddings.patch_embeddings.projection.weight.numel()
    return FP16_BYTES * (linears + patch)


@dataclass
class TierChoice(Record):
    """One assignment of weight bits to the tower's linears."""

    name: str
    tier: str  # network (uniform), block or module
    weight_bits: dict[str, int]  # for `convert_dinov2`
    linear_bytes: int  # the blocks' linears at their bits, with their scales
    budget_bytes: int | None  # what the search was allowed for them (None: uniform)
    predicted: float  # cosine distance per token: measured (uniform) or the additive sum
    bits_used: dict[str, int]  # bit-width -> linears at it


class TowerTiers:
    """The sensitivity of a DINOv2 tower's linears, measured once on calibration images, and
    the assignments of bits solved from it."""

    def __init__(self, tower: nn.Module, calibration: torch.Tensor | None, *,
                 bits: Sequence[int] = TIER_BITS, modules_tier: bool = True,
                 sensitivity: Sensitivity | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        """`calibration`: processed pixel values (N, C, H, W), one probe batch per image;
        `sensitivity`: one measured before on this tower at exactly `bits` (None: here)."""
        dinov2_tower(tower)
        specs = tier_specs(bits)
        self.tower = tower
        encoder = TowerEncoder(tower)
        self.parts: dict[str, Part] = {n: p for n, (p, _) in quantizable_parts(encoder).items()}
        if sensitivity is None:
            if calibration is None:
                raise UserInputError("give calibration images or a measured sensitivity")
            sensitivity = measure_sensitivity(encoder, embedded(tower, calibration), specs,
                                              modules_tier=modules_tier, progress=progress)
        elif sorted(QuantSpec(**f).bits for f in sensitivity.specs.values()) != \
                [s.bits for s in specs]:
            raise UserInputError("the sensitivity given was measured at other bit-widths; "
                                 "measure it again at these")
        self.sensitivity = sensitivity
        self.search = MixedSearch(self.parts, sensitivity, keep_full=False)
        self.labels = {spec.bits: spec.label for spec in specs}

    def restricted(self, bits: Sequence[int]) -> TowerTiers:
        """The same measurements with the search limited to `bits`, some of those measured
        (e.g. without 2 bits, whose damage no other part's extra bits make up for)."""
        keep = {label for b, label in self.labels.items() if b in set(bits)}
        if len(keep) != len(set(bits)):
            raise UserInputError(f"bits {sorted(set(bits))}: the sensitivity was measured at "
                                 f"{sorted(self.labels)} bits")
        measured = self.sensitivity
        narrowed = Sensitivity(
            signal=measured.signal, tokens=measured.tokens,
            specs={k: v for k, v in measured.specs.items() if k in keep},
            network={k: v for k, v in measured.network.items() if k in keep},
            blocks={b: {k: v for k, v in kls.items() if k in keep}
                    for b, kls in measured.blocks.items()},
            modules={m: {k: v for k, v in kls.items() if k in keep}
                     for m, kls in measured.modules.items()},
            seconds=measured.seconds)
        return TowerTiers(self.tower, None, bits=bits, sensitivity=narrowed)

    def uniform(self, bits: int) -> TierChoice:
        if bits not in self.labels:
            raise UserInputError(f"uniform {bits} bits: the sensitivity was measured at "
                                 f"{sorted(self.labels)} bits")
        return self._choice(f"uniform-{bits}", self.search.uniform(self.labels[bits]), None)

    def mixed(self, budget_bytes: int, tier: str = "module") -> TierChoice:
        """The least predicted damage with the blocks' linears within `budget_bytes` (their
        packed weights and scales; the patch embedding is not in it): one bit-width per block
        (`block`) or per linear, each within one bit-width of its block's (`module`)."""
        if tier not in TIERS:
            raise UserInputError(f"tier {tier!r}: choose one of {', '.join(TIERS)}")
        found = self.search.by_block(budget_bytes) if tier == "block" \
            else self.search.by_module(budget_bytes)
        return self._choice(f"{tier}@{budget_bytes}", found, budget_bytes)

    def linear_budget(self, cut: float) -> int:
        """The blocks' linears' bytes that leave the whole tower (the patch embedding at 8 bits
        included) `cut` below its fp16 weights."""
        if not 0 < cut < 1:
            raise UserInputError(f"a memory cut of {cut} is not between 0 and 1")
        return int((1 - cut) * fp16_bytes(self.tower)) - patch_bytes(self.tower)

    def _choice(self, name: str, found: Assignment, budget: int | None) -> TierChoice:
        bits = {label: spec.bits for label, spec in self.search.specs.items()}
        weight_bits = {part: bits[label] for part, label in found.choice.items()}
        used = {str(b): sum(v == b for v in weight_bits.values())
                for b in sorted(set(weight_bits.values()))}
        return TierChoice(name, found.tier, weight_bits, found.weight_bytes, budget,
                          found.predicted_kl, used)


def model_tiers(model: LoadedModel, *, calibration: int = 64, bits: Sequence[int] = TIER_BITS,
                modules_tier: bool = True,
                progress: Callable[[int, int], None] | None = None) -> TowerTiers:
    """The tiers of a VLM's DINOv2 tower (medvlm), measured on the first `calibration` train
    images of the benchmark it was adapted on: the images its integer program is calibrated on
    (`hw.intexec.quality.calibration_pixels`)."""
    tower = dinov2_tower(checked_tower(model))
    tier_specs(bits)  # before the images are made
    return TowerTiers(tower, calibration_pixels(model, calibration), bits=bits,
                      modules_tier=modules_tier, progress=progress)


def tiered_weight_bits(model: LoadedModel, budget_bytes: int, *, tier: str = "module",
                       calibration: int = 64, bits: Sequence[int] = TIER_BITS
                       ) -> dict[str, int]:
    """A `weight_bits` mapping for `convert_dinov2` of `model`'s DINOv2 tower: its linears at
    the bits (of `bits`) that least move its last hidden states on `calibration` train images,
    with their packed weights and per-channel scales within `budget_bytes`."""
    if tier not in TIERS:
        raise UserInputError(f"tier {tier!r}: choose one of {', '.join(TIERS)}")
    tiers = model_tiers(model, calibration=calibration, bits=bits,
                        modules_tier=tier == "module")
    return tiers.mixed(budget_bytes, tier).weight_bits


__all__ = ["TIERS", "TIER_BITS", "TierChoice", "TowerMemory", "TowerTiers", "dinov2_tower",
           "fp16_bytes", "model_tiers", "patch_bytes", "tier_specs", "tiered_weight_bits",
           "tower_memory"]

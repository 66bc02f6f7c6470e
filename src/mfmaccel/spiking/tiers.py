"""Tiered weight quantization of a spiking program (QSViT/QSLM style): the fewest weight bits
each linear of medvlm's DINOv2 tower or of a BERT encoder (minilm-l6) tolerates within a memory
budget.

A settled spiking program equals its static-scale integer program bit for bit, so its weights
are the integer program's (`hw.intexec.dinov2` and `hw.intexec.bert`, per-channel symmetric
grids); giving a linear fewer bits there gives it fewer in the spiking program. The bits are
chosen as compress's mixed precision chooses them for a language model: the blocks seen as an
encoder (`hw.codesign_subject.TowerEncoder`; embeddings computed once in float: a tower's patch
embeddings, an encoder's token embeddings) are probed with per-channel symmetric
round-to-nearest weights at each bit-width (`compress.sensitivity`; the signal is the cosine
distance of the last block's hidden states, what LLaVA's projector reads and what an encoder
pools), block by block and linear by linear, and `compress.mixed.MixedSearch` solves one
bit-width per block (`block` tier) or per linear (`module` tier) for the least predicted damage
within a byte budget. The result is a `weight_bits` mapping for `convert_dinov2` or
`convert_bert`, keyed by the names all use (`layers.3.mlp.fc1`, `layers.3.output.dense`).

The probe quantizes the float model's own weights; the integer program quantizes them after
LayerScale (a per-row factor: the same grid) and SmoothQuant (per-column factors: not the same
grid) are folded in, so the prediction is a proxy and the program is measured for real
(benchmarks/spiking_tiers.py).

Memory (`program_memory`): every integer GEMM weight of the program at its bits, packed, plus
one fp16 scale per output channel, against the same weights in fp16 (2 bytes each). A tower's
patch embedding (a 14x14 convolution, 1% of its weights) is counted and stays at 8 bits;
biases, an encoder's int16 embedding tables, the CLS and position table and the LayerNorms'
constants are not weights of a GEMM and are left out of both sides.
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
from mfmaccel.hw.intexec.dinov2 import check_dinov2
from mfmaccel.hw.intexec.linear import IntLinear
from mfmaccel.hw.intexec.quality import calibration_pixels, corpus_sentences
from mfmaccel.models.record import ENCODER, VLM, LoadedModel
from mfmaccel.records import Record
from mfmaccel.runtime.grid import QuantSpec
from mfmaccel.runtime.parts import Part, quantizable_parts

TIER_BITS = (2, 3, 4, 6, 8)
SEARCH_BITS = (3, 4, 6, 8)  # what `--avg-bits` mixes: 2 bits cost more than other bits repay
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


def bert_encoder(encoder: nn.Module) -> nn.Module:
    """`encoder`, refused in one line unless it is a BERT the integer program covers."""
    from transformers import BertModel

    if not isinstance(encoder, BertModel):
        raise UserInputError(f"tiered weight bits are for a BERT encoder (minilm-l6), not a "
                             f"{type(encoder).__name__}; try minilm-l6")
    return encoder


def tier_specs(bits: Sequence[int] = TIER_BITS) -> list[QuantSpec]:
    """Per-channel symmetric round-to-nearest at each of `bits` (the integer programs' grid),
    refused in one line when a bit-width is not one the quantizer knows."""
    return bit_specs(bits, group_size=None, symmetric=True)


@dataclass
class ProgramMemory(Record):
    """The program's GEMM weights: packed integers plus fp16 per-channel scales, against fp16."""

    weight_bytes: int
    fp16_bytes: int
    cut: float  # 1 - weight_bytes / fp16_bytes
    patch_bytes: int  # a tower's patch embedding's share of weight_bytes (8 bits; 0: none)
    average_bits: float  # per weight, scales included


def _linear_bytes(linear: IntLinear) -> tuple[int, int]:
    """(bytes at its bits with its scales, bytes in fp16) of one integer linear's weights."""
    out, inp = linear.weight.shape
    return QuantSpec(linear.weight_bits, None, True).nbytes(out, inp), FP16_BYTES * out * inp


def program_memory(program) -> ProgramMemory:
    """What an integer program's GEMM weights (`IntDinov2`'s, the patch embedding included, or
    `IntBert`'s) take at their bits."""
    linears = [unit for layer in program.layers
               for unit in (layer.attention.query, layer.attention.key, layer.attention.value,
                            layer.attention_out, layer.intermediate, layer.output)]
    patches = getattr(program, "patches", None)
    patch, patch_fp16 = _linear_bytes(patches.linear) if patches is not None else (0, 0)
    sizes = [_linear_bytes(unit) for unit in linears]
    weight_bytes = patch + sum(b for b, _ in sizes)
    fp16 = patch_fp16 + sum(f for _, f in sizes)
    return ProgramMemory(weight_bytes, fp16, 1 - weight_bytes / fp16, patch,
                         8 * weight_bytes / (fp16 / FP16_BYTES))


def patch_bytes(tower: nn.Module) -> int:
    """The patch embedding's weights at 8 bits with fp16 per-channel scales, as the program
    keeps them."""
    weight = tower.embeddings.patch_embeddings.projection.weight
    return QuantSpec(8, None, True).nbytes(weight.shape[0], weight[0].numel())


def fp16_bytes(tower: nn.Module) -> int:
    """The tower's GEMM weights (the blocks' linears and the patch embedding) in fp16."""
    patch = tower.embeddings.patch_embeddings.projection.weight.numel()
    return _linears_fp16(tower) + FP16_BYTES * patch


def _linears_fp16(module: nn.Module) -> int:
    """The blocks' linears of a tower or an encoder in fp16."""
    return FP16_BYTES * sum(p.params for p, _ in quantizable_parts(TowerEncoder(module)).values())


@dataclass
class TierChoice(Record):
    """One assignment of weight bits to the program's linears."""

    name: str
    tier: str  # network (uniform), block or module
    weight_bits: dict[str, int]  # for `convert_dinov2` or `convert_bert`
    linear_bytes: int  # the blocks' linears at their bits, with their scales
    budget_bytes: int | None  # what the search was allowed for them (None: uniform)
    predicted: float  # cosine distance per token: measured (uniform) or the additive sum
    bits_used: dict[str, int]  # bit-width -> linears at it


class WeightTiers:
    """The sensitivity of a program's linears (the blocks of a tower or an encoder, seen as
    `TowerEncoder`), measured once on embedded calibration inputs, and the assignments of bits
    solved from it. `fp16_bytes`: every GEMM weight of the program in fp16; `fixed_bytes`: what
    the search does not choose (a tower's patch embedding at 8 bits)."""

    def __init__(self, blocks: TowerEncoder, embeddings: Sequence[torch.Tensor] | None, *,
                 fp16_bytes: int, fixed_bytes: int, bits: Sequence[int] = TIER_BITS,
                 modules_tier: bool = True, sensitivity: Sensitivity | None = None,
                 avg_bits: float | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        """`embeddings`: one (1, tokens, hidden) batch per input; `sensitivity`: one measured
        before on these blocks at exactly `bits` (None: here); `avg_bits`: a budget to check
        before minutes of measuring (`at_average_bits`)."""
        specs = tier_specs(bits)
        self.blocks = blocks
        self.fp16_bytes, self.fixed_bytes = fp16_bytes, fixed_bytes
        self.parts: dict[str, Part] = {n: p for n, (p, _) in quantizable_parts(blocks).items()}
        self.lowest = min(spec.bits for spec in specs)
        if avg_bits is not None:
            self.check_average_bits(avg_bits)
        if sensitivity is None:
            if embeddings is None:
                raise UserInputError("give calibration inputs or a measured sensitivity")
            sensitivity = measure_sensitivity(blocks, embeddings, specs,
                                              modules_tier=modules_tier, progress=progress)
        elif sorted(QuantSpec(**f).bits for f in sensitivity.specs.values()) != \
                [s.bits for s in specs]:
            raise UserInputError("the sensitivity given was measured at other bit-widths; "
                                 "measure it again at these")
        self.sensitivity = sensitivity
        self.search = MixedSearch(self.parts, sensitivity, keep_full=False)
        self.labels = {spec.bits: spec.label for spec in specs}

    def restricted(self, bits: Sequence[int]) -> WeightTiers:
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
        return WeightTiers(self.blocks, None, fp16_bytes=self.fp16_bytes,
                           fixed_bytes=self.fixed_bytes, bits=sorted(set(bits)),
                           sensitivity=narrowed)

    def uniform(self, bits: int) -> TierChoice:
        if bits not in self.labels:
            raise UserInputError(f"uniform {bits} bits: the sensitivity was measured at "
                                 f"{sorted(self.labels)} bits")
        return self._choice(f"uniform-{bits}", self.search.uniform(self.labels[bits]), None)

    def mixed(self, budget_bytes: int, tier: str = "module") -> TierChoice:
        """The least predicted damage with the blocks' linears within `budget_bytes` (their
        packed weights and scales; a tower's patch embedding is not in it): one bit-width per
        block (`block`) or per linear, each within one bit-width of its block's (`module`)."""
        if tier not in TIERS:
            raise UserInputError(f"tier {tier!r}: choose one of {', '.join(TIERS)}")
        found = self.search.by_block(budget_bytes) if tier == "block" \
            else self.search.by_module(budget_bytes)
        return self._choice(f"{tier}@{budget_bytes}", found, budget_bytes)

    def linear_budget(self, cut: float) -> int:
        """The blocks' linears' bytes that leave every GEMM weight of the program (a tower's
        patch embedding at 8 bits included) `cut` below fp16."""
        if not 0 < cut < 1:
            raise UserInputError(f"a memory cut of {cut} is not between 0 and 1")
        return int((1 - cut) * self.fp16_bytes) - self.fixed_bytes

    def at_average_bits(self, avg_bits: float, tier: str = "module") -> TierChoice:
        """The mixed assignment whose GEMM weights, scales and fixed parts included, average
        `avg_bits` per weight (16: fp16), refused in one line below the fewest bits measured."""
        self.check_average_bits(avg_bits)
        return self.mixed(self.linear_budget(1 - avg_bits / (FP16_BYTES * 8)), tier)

    def check_average_bits(self, avg_bits: float) -> None:
        """Refuse in one line an average below every linear at the fewest bits measured (with
        its scales and the fixed parts) or not below fp16."""
        lowest = sum(QuantSpec(self.lowest, None, True).nbytes(p.out_features, p.in_features)
                     for p in self.parts.values())
        floor = 8 * (lowest + self.fixed_bytes) / (self.fp16_bytes / FP16_BYTES)
        if avg_bits < floor:
            raise UserInputError(f"--avg-bits {avg_bits:g} is below the {floor:.2f} bits per "
                                 f"weight of every linear at {self.lowest} bits with its "
                                 f"scales; raise --avg-bits to at least {floor:.2f}")
        if avg_bits >= FP16_BYTES * 8:
            raise UserInputError(f"--avg-bits {avg_bits:g} is not below fp16's 16 bits; choose "
                                 "fewer, e.g. 4")

    def _choice(self, name: str, found: Assignment, budget: int | None) -> TierChoice:
        bits = {label: spec.bits for label, spec in self.search.specs.items()}
        weight_bits = {part: bits[label] for part, label in found.choice.items()}
        used = {str(b): sum(v == b for v in weight_bits.values())
                for b in sorted(set(weight_bits.values()))}
        return TierChoice(name, found.tier, weight_bits, found.weight_bytes, budget,
                          found.predicted_kl, used)


class TowerTiers(WeightTiers):
    """The tiers of a DINOv2 tower's 72 linears (medvlm's), on processed pixel values."""

    def __init__(self, tower: nn.Module, calibration: torch.Tensor | None, *,
                 bits: Sequence[int] = TIER_BITS, modules_tier: bool = True,
                 sensitivity: Sensitivity | None = None, avg_bits: float | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        """`calibration`: processed pixel values (N, C, H, W), one probe batch per image."""
        dinov2_tower(tower)
        tier_specs(bits)  # before the images are embedded
        self.tower = tower
        super().__init__(TowerEncoder(tower), None if calibration is None
                         else embedded(tower, calibration),
                         fp16_bytes=fp16_bytes(tower), fixed_bytes=patch_bytes(tower),
                         bits=bits, modules_tier=modules_tier, sensitivity=sensitivity,
                         avg_bits=avg_bits, progress=progress)


@torch.inference_mode()
def token_embeddings(encoder: nn.Module, tokenizer, texts: Sequence[str], *,
                     max_length: int = 128) -> list[torch.Tensor]:
    """Each text's token embeddings (word, position and type, normalised) as a (1, tokens,
    hidden) batch, unpadded: what the encoder's first block reads."""
    batches = []
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=max_length,
                        return_tensors="pt").input_ids
        batches.append(encoder.embeddings(input_ids=ids))
    return batches


def encoder_tiers(model: LoadedModel, *, calibration: int = 64,
                  texts: Sequence[str] | None = None, bits: Sequence[int] = TIER_BITS,
                  modules_tier: bool = True, avg_bits: float | None = None,
                  progress: Callable[[int, int], None] | None = None) -> WeightTiers:
    """The tiers of a BERT encoder's linears (minilm-l6), measured on `texts`, those its
    integer program is calibrated on (None: the corpus's first `calibration` train
    paragraphs)."""
    encoder = bert_encoder(model.module)
    tier_specs(bits)
    texts = corpus_sentences("train", calibration) if texts is None else texts
    embeddings = token_embeddings(encoder, model.tokenizer, texts)
    return WeightTiers(TowerEncoder(encoder), embeddings, fp16_bytes=_linears_fp16(encoder),
                       fixed_bytes=0, bits=bits, modules_tier=modules_tier, avg_bits=avg_bits,
                       progress=progress)


def model_tiers(model: LoadedModel, *, calibration: int = 64, bits: Sequence[int] = TIER_BITS,
                modules_tier: bool = True, avg_bits: float | None = None,
                progress: Callable[[int, int], None] | None = None) -> WeightTiers:
    """The tiers of an encoder (`encoder_tiers`) or of a VLM's DINOv2 tower (medvlm), the
    tower's measured on the first `calibration` train images of the benchmark it was adapted
    on: the images its integer program is calibrated on
    (`hw.intexec.quality.calibration_pixels`)."""
    if model.kind not in (ENCODER, VLM):
        raise UserInputError(f"{model.name} is a {model.kind} model; tiered weight bits cover "
                             "BERT encoders (minilm-l6) and DINOv2 towers (medvlm)")
    if model.kind == ENCODER:
        return encoder_tiers(model, calibration=calibration, bits=bits,
                             modules_tier=modules_tier, avg_bits=avg_bits, progress=progress)
    tower = dinov2_tower(checked_tower(model))
    tier_specs(bits)  # before the images are made
    return TowerTiers(tower, calibration_pixels(model, calibration), bits=bits,
                      modules_tier=modules_tier, avg_bits=avg_bits, progress=progress)


def tiered_weight_bits(model: LoadedModel, *, avg_bits: float, tier: str = "module",
                       calibration: int = 64, bits: Sequence[int] = SEARCH_BITS,
                       progress: Callable[[int, int], None] | None = None) -> TierChoice:
    """The bits (of `bits`) for each linear of `model`'s integer program (a BERT encoder's or
    a VLM's DINOv2 tower's) that least move its last hidden states on `calibration` train
    inputs with every GEMM weight, scales included, at `avg_bits` per weight on average."""
    if tier not in TIERS:
        raise UserInputError(f"tier {tier!r}: choose one of {', '.join(TIERS)}")
    tiers = model_tiers(model, calibration=calibration, bits=bits,
                        modules_tier=tier == "module", avg_bits=avg_bits, progress=progress)
    return tiers.at_average_bits(avg_bits, tier)


__all__ = ["SEARCH_BITS", "TIERS", "TIER_BITS", "ProgramMemory", "TierChoice", "TowerTiers",
           "WeightTiers", "bert_encoder", "dinov2_tower", "encoder_tiers", "fp16_bytes",
           "model_tiers", "patch_bytes", "program_memory", "tier_specs", "tiered_weight_bits",
           "token_embeddings"]

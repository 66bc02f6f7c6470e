"""Tiered weight bits of the spiking DINOv2 tower (issue 25, item 2): the integer programs'
weights on fewer-bit grids, only where named, by the names compress's sensitivity uses; fewer
bits move the tower further from float; a mixed-bit spiking tower still equals its integer
program once settled; the tiers' search fits its budget and its bytes are the program's."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from mfmaccel.data.medvqa import load_medvqa
from mfmaccel.errors import UserInputError
from mfmaccel.finetune.data import pixel_tensor
from mfmaccel.hw.codesign_subject import TowerEncoder
from mfmaccel.hw.intexec.bert import convert_bert
from mfmaccel.hw.intexec.dinov2 import convert_dinov2, linear_names
from mfmaccel.hw.intexec.linear import weight_integers
from mfmaccel.hw.intexec.quality import integer_tower, vision_agreement
from mfmaccel.hw.intexec.vit import IntegerTower
from mfmaccel.models import load_model
from mfmaccel.models.medvlm import TINY_PRETRAINED, build_medvlm
from mfmaccel.runtime.parts import quantizable_parts
from mfmaccel.spiking.tiers import (
    SEARCH_BITS,
    TowerTiers,
    encoder_tiers,
    fp16_bytes,
    model_tiers,
    patch_bytes,
    program_memory,
    tier_specs,
    tiered_weight_bits,
)
from mfmaccel.spiking.vit import SpikingDinov2

Q = "layers.0.attention.q_proj"
FC1 = "layers.0.mlp.fc1"
FC2 = "layers.0.mlp.fc2"


@pytest.fixture(scope="module")
def vlm():
    return build_medvlm(seed=0, tiny=True, vision=TINY_PRETRAINED)


@pytest.fixture(scope="module")
def images(vlm) -> torch.Tensor:
    samples = load_medvqa("train", per_source=2)
    return pixel_tensor(vlm.processor, [s.image for s in samples])


def _linears(program) -> dict[str, object]:
    layer = program.layers[0]
    attention = layer.attention
    return {Q: attention.query, "layers.0.attention.k_proj": attention.key,
            "layers.0.attention.v_proj": attention.value,
            "layers.0.attention.o_proj": layer.attention_out, FC1: layer.intermediate,
            FC2: layer.output}


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_weights_at_b_bits_fill_their_symmetric_range(bits) -> None:
    weight = torch.randn(16, 40, generator=torch.Generator().manual_seed(bits)) * 3
    integers, scales = weight_integers(weight, bits)
    top = 2 ** (bits - 1) - 1
    assert int(integers.abs().max()) <= top
    assert torch.equal(integers.abs().amax(1), torch.full((16,), top))  # each row's extreme
    error = (integers.double() * scales[:, None] - weight.double()).abs()
    assert bool((error <= scales[:, None] / 2 + 1e-12).all())  # round to nearest
    if bits == 8:  # the int8 grid the programs always had
        old_scales = weight.double().abs().amax(1) / 127
        assert torch.equal(integers, torch.round(weight.double() / old_scales[:, None]).long())


def test_the_names_are_those_compress_gives_the_tower(vlm) -> None:
    tower = vlm.module.model.vision_tower
    names = [name for block in linear_names(tower) for name in block]
    assert names == list(quantizable_parts(TowerEncoder(tower)))
    assert set(names) == set(_linears(convert_dinov2(tower, [torch.zeros(1, 3, 28, 28)],
                                                     per_token=False)))


@torch.inference_mode()
def test_a_mapping_changes_only_the_named_layers(vlm, images) -> None:
    tower = vlm.module.model.vision_tower
    default = convert_dinov2(tower, [images], per_token=False)
    at_eight = convert_dinov2(tower, [images], per_token=False,
                              weight_bits=dict.fromkeys(_linears(default), 8))
    mixed = convert_dinov2(tower, [images], per_token=False, weight_bits={FC1: 3, FC2: 2})
    assert torch.equal(default.hidden_states(images)[-1][0], at_eight.hidden_states(images)[-1][0])
    before, after = _linears(default), _linears(mixed)
    for name, unit in after.items():
        bits = {FC1: 3, FC2: 2}.get(name, 8)
        assert unit.weight_bits == bits
        assert int(unit.weight.abs().max()) == 2 ** (bits - 1) - 1
        same = torch.equal(unit.weight, before[name].weight) and torch.equal(
            unit.requant.m, before[name].requant.m)
        assert same == (bits == 8), name
    # fc2 reaches the program LayerScale-folded (a copy): its bits still follow its name
    assert torch.equal(mixed.patches.linear.weight, default.patches.linear.weight)
    assert mixed.patches.linear.weight_bits == 8


@torch.inference_mode()
def test_fewer_bits_move_the_tower_further_from_float(vlm, images) -> None:
    tower = vlm.module.model.vision_tower
    names = [name for block in linear_names(tower) for name in block]
    reference = tower(images[8:], output_hidden_states=True).hidden_states[-1].double()
    cosines = []
    for bits in (8, 4, 2):
        program = convert_dinov2(tower, [images[:8]], per_token=False,
                                 weight_bits=dict.fromkeys(names, bits))
        hidden = IntegerTower(program, 14)(images[8:]).hidden_states[-1].double()
        cosines.append(float(functional.cosine_similarity(reference, hidden, dim=-1).mean()))
    assert cosines[0] > cosines[1] > cosines[2], cosines


@pytest.mark.parametrize("levels", [4, None])
@torch.inference_mode()
def test_a_mixed_bit_spiking_tower_equals_its_program_once_settled(vlm, images, levels) -> None:
    tower = vlm.module.model.vision_tower
    program = convert_dinov2(tower, [images], per_token=False,
                             weight_bits={Q: 2, "layers.0.attention.v_proj": 3, FC1: 4, FC2: 6})
    hidden, run = SpikingDinov2(program, levels=levels).run(images[:2])
    assert run.settled_at == run.steps
    assert torch.equal(hidden, program.hidden_states(images[:2])[-1][0])


@pytest.mark.parametrize("weight_bits, match", [
    ({"layers.1.attention.q_proj": 4}, "not a linear of this program"),
    ({"attention.q_proj": 4}, "e.g. 'layers.0.attention.q_proj'"),
    ({Q: 1}, "choose an integer from 2 to 8"),
    ({Q: 9}, "choose an integer from 2 to 8"),
    ({Q: 4.0}, "choose an integer from 2 to 8"),
    ({Q: True}, "choose an integer from 2 to 8"),
])
def test_bad_names_and_bits_are_refused_before_calibration(vlm, weight_bits, match) -> None:
    tower = vlm.module.model.vision_tower
    with pytest.raises(UserInputError, match=match) as error:
        convert_dinov2(tower, [], per_token=False, weight_bits=weight_bits)  # no images read
    assert "\n" not in str(error.value)


def test_bert_takes_weight_bits_by_name_too() -> None:
    bert = load_model("tiny-bert")
    batch = dict(bert.tokenizer(["a short sentence about lungs", "and another one"],
                                padding=True, return_tensors="pt"))
    default = convert_bert(bert.module, [batch])
    name = "layers.1.intermediate.dense"
    assert name in quantizable_parts(bert.module)
    mixed = convert_bert(bert.module, [batch], weight_bits={name: 3})
    assert mixed.layers[1].intermediate.weight_bits == 3
    assert int(mixed.layers[1].intermediate.weight.abs().max()) == 3
    assert torch.equal(mixed.layers[0].intermediate.weight, default.layers[0].intermediate.weight)
    assert torch.equal(mixed.layers[1].output.weight, default.layers[1].output.weight)
    with pytest.raises(UserInputError, match="not a linear of this program"):
        convert_bert(bert.module, [batch], weight_bits={"embed": 4})


def test_a_vit_hybrid_tower_refuses_weight_bits() -> None:
    hybrid = load_model("medvlm-tiny").module.model.vision_tower
    with pytest.raises(UserInputError, match="DINOv2 tower"):
        integer_tower(hybrid, [torch.randn(1, 3, 64, 64)], weight_bits={Q: 4})


@torch.inference_mode()
def test_tiers_fit_their_budget_and_count_the_programs_bytes(vlm, images) -> None:
    tower = vlm.module.model.vision_tower
    tiers = TowerTiers(tower, images[:4])
    assert sorted(tiers.labels) == [2, 3, 4, 6, 8]
    for bits in (8, 3):
        choice = tiers.uniform(bits)
        program = convert_dinov2(tower, [images], per_token=False,
                                 weight_bits=choice.weight_bits)
        memory = program_memory(program)
        assert memory.weight_bytes == choice.linear_bytes + patch_bytes(tower)
        assert memory.fp16_bytes == fp16_bytes(tower)
    eight, three = program_memory(convert_dinov2(tower, [images], per_token=False)), memory
    assert 0.45 < eight.cut < 0.5 < three.cut  # int8 plus scales: a little under half
    budget = tiers.uniform(3).linear_bytes
    for tier in ("block", "module"):
        choice = tiers.mixed(budget, tier)
        assert choice.linear_bytes <= budget and set(choice.weight_bits) == set(tiers.parts)
        assert set(choice.weight_bits.values()) <= {2, 3, 4, 6, 8}
    roomy = tiers.mixed(tiers.uniform(4).linear_bytes, "module")
    assert roomy.predicted <= tiers.mixed(budget, "module").predicted
    narrow = tiers.restricted([3, 4, 6, 8])
    assert 2 not in narrow.mixed(budget + 2000, "module").weight_bits.values()
    assert tiers.linear_budget(0.5) == int(0.5 * fp16_bytes(tower)) - patch_bytes(tower)
    with pytest.raises(UserInputError, match="below the smallest model"):
        tiers.mixed(tiers.uniform(2).linear_bytes - 1, "block")
    with pytest.raises(UserInputError, match="measured at"):
        tiers.restricted([5, 8])


def test_tiered_weight_bits_for_a_vlm_build_its_program(vlm, images) -> None:
    tower = vlm.module.model.vision_tower
    tiers = model_tiers(vlm, calibration=2, bits=SEARCH_BITS, modules_tier=False)
    choice = tiers.at_average_bits(7, "block")
    program = convert_dinov2(tower, [images], per_token=False, weight_bits=choice.weight_bits)
    memory = program_memory(program)
    assert memory.weight_bytes == choice.linear_bytes + patch_bytes(tower)
    # the budget counts the scales and the patch embedding at 8 bits: in this tiny tower those
    # put every linear at 3 bits at 6.2 bits a weight
    assert 6.2 < memory.average_bits <= 7
    assert set(choice.weight_bits.values()) <= {3, 4, 6, 8}  # no 2 bits in the search
    with pytest.raises(UserInputError, match=r"--avg-bits 5 is below the 6\.\d\d bits"):
        tiers.at_average_bits(5)
    with pytest.raises(UserInputError, match="not below fp16"):
        tiers.at_average_bits(16)
    with pytest.raises(UserInputError, match="not a DINOv2|DINOv2 or ViT"):
        tiered_weight_bits(load_model("medvlm-tiny"), avg_bits=4)
    with pytest.raises(UserInputError, match="tier 'layer'"):
        tiered_weight_bits(vlm, avg_bits=4, tier="layer")


def test_tiered_weight_bits_for_an_encoder_build_its_program() -> None:
    bert = load_model("tiny-bert")
    choice = tiered_weight_bits(bert, avg_bits=5, calibration=4)
    assert set(choice.weight_bits) == {n for n in quantizable_parts(bert.module) if n != "embed"}
    assert len(set(choice.weight_bits.values())) > 1  # mixed: 5 bits is no uniform width
    batch = dict(bert.tokenizer(["a short sentence about lungs", "and another one"],
                                return_tensors="pt", padding=True))
    program = convert_bert(bert.module, [batch], weight_bits=choice.weight_bits)
    memory = program_memory(program)
    assert memory.patch_bytes == 0 and memory.weight_bytes == choice.linear_bytes
    assert 4.5 < memory.average_bits <= 5
    eight = program_memory(convert_bert(bert.module, [batch]))
    assert eight.fp16_bytes == memory.fp16_bytes and eight.average_bits > 8
    with pytest.raises(UserInputError, match="causal-lm model; tiered weight bits cover"):
        tiered_weight_bits(load_model("tiny-llama"), avg_bits=4)
    with pytest.raises(UserInputError, match="BERT encoder"):
        encoder_tiers(load_model("medvlm-tiny"))


@pytest.mark.parametrize("bits, match", [([1, 4], "--weight-bits 1"), ([4], "at least two")])
def test_tier_specs_refuse_what_cannot_be_mixed(bits, match) -> None:
    with pytest.raises(UserInputError, match=match):
        tier_specs(bits)


def test_vqa_through_a_prebuilt_mixed_tower(vlm, images) -> None:
    from mfmaccel.evaluate.vqa import vqa_accuracy
    from mfmaccel.finetune.data import val_subset
    from mfmaccel.hw.intexec.quality import benchmark_splits, calibration_pixels

    tower = vlm.module.model.vision_tower
    pixels = calibration_pixels(vlm, 4)
    program = convert_dinov2(tower, list(pixels.split(16)), per_token=False,
                             weight_bits={FC1: 3})
    _, _, test = benchmark_splits(vlm, 4)
    reference = vqa_accuracy(vlm, val_subset(test, 4))
    record = vision_agreement(vlm, questions=4, calibration=4, per_token=False,
                              stand_in=IntegerTower(program, 14), reference=reference)
    built = vision_agreement(vlm, questions=4, calibration=4, per_token=False,
                             weight_bits={FC1: 3})
    assert record.to_dict() == built.to_dict()  # the same program, float scored once less
    with pytest.raises(UserInputError, match="scored 4 questions, not these 3"):
        vision_agreement(vlm, questions=3, calibration=4, per_token=False,
                         stand_in=IntegerTower(program, 14), reference=reference)

"""Fused schedules in the accelerator model: they never move more off-chip bytes than the
unfused ones, attention's scores stop crossing the link, small buffers force re-reads, and a
whole model reports both ways; fusion is an explicit, recorded choice."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from mfmaccel.cli import app
from mfmaccel.errors import UserInputError
from mfmaccel.hw.arch import DEFAULT_FUSION, FUSION_KINDS, Arch, get_arch, parse_fusion
from mfmaccel.hw.dataflow import GemmShape, map_gemm
from mfmaccel.hw.dse import DesignSpace, explore
from mfmaccel.hw.fusion import (
    AttentionBlock,
    MlpBlock,
    fused_attention,
    fused_mlp,
    schedule_units,
    unfused_attention_bytes,
)
from mfmaccel.hw.ops import Gemm, VectorOp
from mfmaccel.hw.simulate import simulate, simulate_unit
from mfmaccel.hw.trace import workload_for_spec
from mfmaccel.hw.workload import workload_for_model
from mfmaccel.models import load_model

EDGE = get_arch("edge")
NONE, ALL = replace(EDGE, fusion=()), replace(EDGE, fusion=FUSION_KINDS)


def attention(length: int, heads: int = 12, dim: int = 64) -> AttentionBlock:
    return AttentionBlock(Gemm("attention-score", length, length, dim, heads, None),
                          VectorOp("softmax", heads * length, length),
                          Gemm("attention-context", length, dim, length, heads, None))


def dram(results) -> float:
    return sum(r.dram_bytes for r in results)


def test_attention_at_512_keeps_its_scores_on_chip() -> None:
    """12 heads of 64 at L=512 on the edge preset: K and V of a head (64 KiB) fit the B buffer,
    so fused moves exactly Q, K, V and the context once; unfused adds int32 scores and 16-bit
    probabilities out and back. The cut is far beyond the 40% asked."""
    block = attention(512)
    fused, unfused = dram(simulate_unit(block, ALL)), dram(simulate_unit(block, NONE))
    assert fused == 12 * 4 * 512 * 64
    assert unfused >= fused + unfused_attention_bytes(block)
    assert unfused_attention_bytes(block) == 12 * 512 * 512 * 12
    assert 1 - fused / unfused >= 0.4


@pytest.mark.parametrize("arch", ["edge", "large", "swifttron"])
@pytest.mark.parametrize("length", [16, 128, 512, 2048])
def test_fused_never_moves_more_than_unfused(arch: str, length: int) -> None:
    base = get_arch(arch)
    for block in (attention(length), attention(length, heads=4, dim=128)):
        fused = simulate_unit(block, replace(base, fusion=FUSION_KINDS))
        unfused = simulate_unit(block, replace(base, fusion=()))
        assert dram(fused) <= dram(unfused)


def test_small_buffers_force_re_reads_of_k_and_v() -> None:
    """At L=2048 K and V of one head (256 KiB) overflow every B buffer below: read once per
    query block, so bytes grow as the buffers shrink; large enough, they are read once."""
    block = attention(2048)
    sizes = [(2048, 2048), (256, 64), (128, 64), (64, 32), (32, 16)]  # (B, A and out) KiB
    moved = []
    for b_kib, other in sizes:
        arch = replace(EDGE, b_buffer_kib=b_kib, a_buffer_kib=other, out_buffer_kib=other)
        moved.append(fused_attention(arch, block).dram_bytes)
    totals = [sum(m) for m in moved]
    assert totals[0] == 12 * 4 * 2048 * 64  # everything once
    assert all(a <= b for a, b in zip(totals, totals[1:], strict=False))
    assert totals[-1] > 4 * totals[0]


def test_no_room_for_one_query_block_falls_back_to_unfused() -> None:
    """An out buffer that holds one array tile of partial sums but not the online softmax's
    state: the fused schedule does not exist and the unfused one runs."""
    tight = replace(ALL, out_buffer_kib=1)
    block = attention(256)
    assert fused_attention(tight, block) is None
    assert all(r.schedule == "unfused" for r in simulate_unit(block, tight))


def test_units_find_attention_and_mlp_blocks() -> None:
    """tiny-llama: per layer one attention call and one SwiGLU MLP (gate, SiLU, up, product,
    down), folded into a count of layers; BERT's MLP spans two modules and is found too."""
    loaded = load_model("tiny-llama")
    layers = loaded.module.config.num_hidden_layers
    units = schedule_units(workload_for_model(loaded, 8))
    blocks = [u for u in units if isinstance(u, (AttentionBlock, MlpBlock))]
    assert sorted(type(u).__name__ for u in blocks) == ["AttentionBlock", "MlpBlock"]
    assert all(u.count == layers for u in blocks)
    mlp = next(u for u in blocks if isinstance(u, MlpBlock))
    assert [getattr(op, "unit", "gemm") for op in mlp.ops] == ["gemm", "silu", "gemm", "add",
                                                               "gemm"]
    bert = schedule_units(workload_for_model(load_model("tiny-bert"), 8))
    assert any(isinstance(u, MlpBlock) for u in bert)


def test_mlp_fuses_where_its_weights_fit_and_not_where_they_do_not() -> None:
    """A 64 -> 256 -> 64 MLP on 32 tokens: on the edge preset its weights fit, the intermediate
    (32 x 256) stays on chip and is never written. With 8 KiB A and 4 KiB B buffers only 16
    rows and their intermediate fit and the weights do not: read once per row block, more than
    the intermediate saves, so the unfused form runs."""
    block = MlpBlock((Gemm("ffn", 32, 256, 64), VectorOp("gelu", 32, 256),
                      Gemm("ffn", 32, 64, 256)))
    fused = simulate_unit(block, ALL)
    assert dram(fused) == 32 * 64 + 2 * 64 * 256 + 32 * 64
    assert dram(fused) < dram(simulate_unit(block, NONE))
    assert fused[0].schedule.startswith("fused mlp")
    small = replace(ALL, a_buffer_kib=8, b_buffer_kib=4)
    plan = fused_mlp(small, block)
    no_mlp = replace(small, fusion=("activation", "norm", "attention"))
    assert plan is not None and sum(plan.dram_bytes) > dram(simulate_unit(block, no_mlp))
    assert "16 token rows" in plan.detail
    assert [r.schedule for r in simulate_unit(block, small)] == ["unfused", "fused", "unfused"]


@pytest.fixture(scope="module")
def smollm2():
    return workload_for_spec("smollm2-135m", 128)


def test_whole_model_reports_bytes_and_energy_both_ways(smollm2) -> None:
    """smollm2-135m, a 128-token prefill on the edge preset: fusing everything cuts off-chip
    bytes and energy against no fusion, each fusion kind alone lies between, and the record
    says which fusion it priced."""
    none, every = simulate(smollm2, NONE), simulate(smollm2, ALL)
    assert none.fusion == [] and every.fusion == list(FUSION_KINDS)
    assert every.dram_bytes < 0.8 * none.dram_bytes
    assert every.energy_mj < none.energy_mj and every.latency_ms <= none.latency_ms
    assert none.macs == every.macs
    for kind in FUSION_KINDS:
        one = simulate(smollm2, replace(EDGE, fusion=(kind,)))
        assert every.dram_bytes <= one.dram_bytes <= none.dram_bytes
    assert any(op.schedule.startswith("fused attention") for op in every.ops)
    assert all(op.schedule == "unfused" for op in none.ops if op.name == "attention-score")


def test_default_fusion_is_what_the_model_assumed_before() -> None:
    """Activations fused, norms and adds as passes over off-chip memory (2 and 3 bytes per
    element), attention's scores on chip."""
    assert EDGE.fusion == DEFAULT_FUSION == ("activation", "attention")
    norm = simulate_unit(VectorOp("rmsnorm", 8, 64), EDGE)[0]
    add = simulate_unit(VectorOp("add", 8, 64), EDGE)[0]
    silu = simulate_unit(VectorOp("silu", 8, 64), EDGE)[0]
    assert (norm.dram_bytes, add.dram_bytes, silu.dram_bytes) == (2 * 512, 3 * 512, 0)
    fused_norm = simulate_unit(VectorOp("rmsnorm", 8, 64), ALL)[0]
    assert fused_norm.dram_bytes == 512 and fused_norm.schedule == "fused"


def test_fusion_choices_parse_and_bad_ones_name_what_works() -> None:
    assert parse_fusion("none") == ()
    assert parse_fusion("all") == FUSION_KINDS
    assert parse_fusion("epilogue") == ("activation", "norm")
    assert parse_fusion("mlp, attention") == ("attention", "mlp")
    with pytest.raises(UserInputError, match="use none, epilogue, all or a comma list"):
        parse_fusion("flash")
    with pytest.raises(UserInputError, match="fusion must be a subset"):
        Arch("x", 4, 4, 1, 1, 1, 1, 1, fusion=("everything",))


def test_dse_prices_each_design_with_its_fusion() -> None:
    workload = workload_for_spec("roberta-base", 256)
    space = DesignSpace(rows=(16,), cols=(16,), a_buffer_kib=(64,), b_buffer_kib=(128,),
                        out_buffer_kib=(64,), bandwidth_gbs=(8.5,), clock_mhz=(400,),
                        vector_lanes=(16,))
    none = explore(workload, replace(space, fusion=())).points[0]
    every = explore(workload, replace(space, fusion=FUSION_KINDS)).points[0]
    assert every.energy_mj < none.energy_mj and every.latency_ms <= none.latency_ms


def test_cli_simulate_takes_a_fusion(tmp_path) -> None:
    out = tmp_path / "sim.json"
    done = CliRunner().invoke(app, ["hw", "simulate", "--model", "roberta-base", "--seq-len",
                                    "64", "--fusion", "none", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert json.loads(out.read_text())["fusion"] == []
    bad = CliRunner().invoke(app, ["hw", "simulate", "--model", "roberta-base", "--fusion",
                                   "flash", "--out", str(tmp_path / "bad.json")])
    assert bad.exit_code == 2 and "comma list" in bad.output


def test_split_k_is_tried_even_when_a_whole_k_block_fits() -> None:
    """smollm2's MLP down-projection on 128 tokens, edge preset, output-stationary: holding 80
    weight columns re-reads the activations 8 times (2.53 MB); a 128 x 128 output block with K
    in chunks of 512 moves 1.94 MB (ZigZag's mapper found a 2.43 MB one, which exposed that K
    was split only when nothing else fitted)."""
    mapping = map_gemm(replace(EDGE, dataflows=("os",)), GemmShape(128, 576, 1536))
    assert mapping.dram_bytes == 5 * 128 * 1536 + 1536 * 576 + 128 * 576
    assert "K chunks" in mapping.block

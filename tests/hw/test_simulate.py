"""The accelerator's performance model: workloads read off real forward passes, GEMM mappings
that fit the buffers, the RTL's exact cycle count, and the bad-input answers."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.hw.arch import PRESETS, TECH_45NM, TECH_65NM, Arch, get_arch
from mfmaccel.hw.dataflow import GemmShape, map_gemm, os_cycles
from mfmaccel.hw.ops import Gemm, VectorOp
from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.gemm import gemm_arch
from mfmaccel.hw.simulate import simulate, simulate_op
from mfmaccel.hw.trace import workload_for_spec
from mfmaccel.hw.workload import workload_for_model
from mfmaccel.models import load_model

EDGE = get_arch("edge")


@pytest.fixture(scope="module")
def roberta():
    return workload_for_spec("roberta-base", 64)


def test_roberta_workload_has_every_operation_of_the_encoder(roberta) -> None:
    """From the public config on the meta device: 12 layers of 4 projections, 2 FFN GEMMs,
    attention products per head, softmax, GELU, two LayerNorms and two residual adds."""
    ops = roberta.ops
    gemms = [op for op in ops if isinstance(op, Gemm)]
    assert sum(op.role == "projection" for op in gemms) == 48
    assert sum(op.role == "ffn" for op in gemms) == 24
    scores = [op for op in gemms if op.role == "attention-score"]
    assert len(scores) == 12 and {(s.m, s.n, s.k, s.batch) for s in scores} == {(64, 64, 64, 12)}
    units = [op.unit for op in ops if isinstance(op, VectorOp)]
    assert units.count("softmax") == 12 and units.count("gelu") == 12
    assert units.count("layernorm") == 25  # embeddings + 2 per layer
    per_layer = 64 * (4 * 768 * 768 + 2 * 768 * 3072) + 2 * 12 * 64 * 64 * 64
    assert roberta.macs == 12 * per_layer + 768 * 768  # + the pooler on one token


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert", "vit", "llava"])
def test_traced_macs_match_the_linear_layers(arch: str) -> None:
    """Every weight GEMM of a real forward pass is found: their MACs equal tokens x weights."""
    loaded = load_model(f"tiny-{arch}")
    workload = workload_for_model(loaded, 16)
    weight_macs = sum(op.macs for op in workload.ops if isinstance(op, Gemm)
                      and op.weight_bits and op.role != "conv")
    assert weight_macs > 0
    assert any(op.role == "attention-score" for op in workload.ops if isinstance(op, Gemm))
    if arch in ("llama", "gpt2", "bert"):
        per_token = sum(op.m * op.n * op.k * op.batch for op in workload.ops
                        if isinstance(op, Gemm) and op.weight_bits and op.role != "head")
        body = sum(m.weight.numel() for n, m in loaded.module.named_modules()
                   if type(m).__name__ in ("FewRowsLinear", "Conv1D", "Linear")
                   and not any(k in n for k in ("pooler", "lm_head", "classifier")))
        assert per_token == 16 * body


def test_quantized_layers_carry_their_bits() -> None:
    from mfmaccel.compress.quantize import quantize_model, uniform_plan
    from mfmaccel.runtime.grid import QuantSpec

    loaded = load_model("tiny-llama")
    quantize_model(loaded, uniform_plan(loaded.module, QuantSpec(bits=4, group_size=32)))
    bits = {op.weight_bits for op in workload_for_model(loaded, 8).ops
            if isinstance(op, Gemm) and op.role in ("projection", "ffn")}
    assert bits == {4}


def test_gemm_cycles_equal_the_rtl_engine_count() -> None:
    """The model's output-stationary count is the generated engine's latency, which its cocotb
    bench asserts edge for edge (tests/hw/rtl): 1 start + per tile 1 + K + rows."""
    cfg = RtlConfig(rows=4, cols=4)
    for m, n, k in [(1, 1, 1), (4, 4, 10), (5, 4, 10), (16, 16, 64), (7, 13, 33)]:
        tiles = math.ceil(m / 4) * math.ceil(n / 4)
        op = simulate_op(Gemm("ffn", m, n, k), gemm_arch(cfg))
        assert op.compute_cycles == os_cycles(gemm_arch(cfg), m, n, k) == 1 + tiles * (1 + k + 4)
        assert op.cycles == op.compute_cycles  # buffers filled by the host: never link-bound


def test_mapping_prefers_the_least_off_chip_traffic() -> None:
    """A weight matrix that fits the B buffer whole is read once; halve the buffer and the
    mapping must re-read an operand (more traffic), never less."""
    shape = GemmShape(512, 256, 256)
    roomy = replace(EDGE, b_buffer_kib=128, a_buffer_kib=512)
    tight = replace(EDGE, b_buffer_kib=16, a_buffer_kib=16)
    once = 512 * 256 + 256 * 256 + 512 * 256
    assert map_gemm(roomy, shape).dram_bytes == once
    assert map_gemm(tight, shape).dram_bytes > once


def test_weight_stationary_is_chosen_when_it_moves_less() -> None:
    """A tall GEMM with a B that fits: both dataflows read everything once, ties go to the
    fewer cycles; with only 'ws' allowed the mapping says so."""
    ws_only = replace(EDGE, dataflows=("ws",))
    mapping = map_gemm(ws_only, GemmShape(256, 64, 64))
    assert mapping.dataflow == "ws" and mapping.compute_cycles > 0


def test_tiled_attention_never_spills_scores_but_full_rows_do() -> None:
    """At 4k tokens one row block of int32 scores (16 x 4096 x 4 = 256 KiB) overflows the
    edge's 64 KiB out buffer: whole-row attention pays off-chip bytes, tiled does not."""
    score = Gemm("attention-score", 4096, 4096, 64, batch=1, weight_bits=None)
    tiled = simulate_op(score, EDGE)
    full = simulate_op(score, replace(EDGE, attention="full"))
    assert full.dram_bytes > tiled.dram_bytes
    assert full.dram_bytes - tiled.dram_bytes == 4096 * 4096 * 12


def test_simulation_totals_add_up(roberta) -> None:
    result = simulate(roberta, EDGE)
    assert result.cycles == sum(op.cycles for op in result.ops)
    assert result.latency_ms == pytest.approx(result.cycles / 400e3)
    assert result.macs == roberta.macs
    assert 0 < result.utilisation <= 1
    assert result.energy_mj == pytest.approx(sum(result.energy_breakdown_mj.values()))
    assert {op.bound for op in result.ops} <= {"compute", "bandwidth"}
    faster = simulate(roberta, replace(EDGE, clock_mhz=800, bandwidth_gbs=17))
    assert faster.latency_ms < result.latency_ms


def test_65nm_costs_more_than_45nm() -> None:
    assert TECH_65NM.mac_pj > TECH_45NM.mac_pj and TECH_65NM.mac_um2 > TECH_45NM.mac_um2
    assert TECH_65NM.dram_pj_per_byte == TECH_45NM.dram_pj_per_byte
    assert TECH_45NM.sram_energy(8 * 1024) < TECH_45NM.sram_energy(1 << 20)


def test_presets_cover_swifttron_edge_and_large() -> None:
    assert {"swifttron", "edge", "large"} <= set(PRESETS)
    assert get_arch("swifttron").tech is TECH_65NM


def test_bad_architectures_name_the_parameter() -> None:
    with pytest.raises(UserInputError, match="bandwidth_gbs must be positive"):
        replace(EDGE, bandwidth_gbs=0)
    with pytest.raises(UserInputError, match="clock_mhz must be positive"):
        replace(EDGE, clock_mhz=0)
    with pytest.raises(UserInputError, match="unknown architecture preset"):
        get_arch("tpu9")
    with pytest.raises(UserInputError, match=r"out_buffer_kib=0.5 .* smallest that works is 1 KiB"):
        map_gemm(replace(EDGE, out_buffer_kib=0.5), GemmShape(64, 64, 64))


def test_operation_without_a_unit_is_refused() -> None:
    """SwiftTron has no SiLU or RMSNorm: a Llama cannot run on it."""
    llama = workload_for_model(load_model("tiny-llama"), 8)
    with pytest.raises(UserInputError, match="'rmsnorm' .* no unit on arch swifttron"):
        simulate(llama, get_arch("swifttron"))


def test_too_long_sequences_and_unknown_models_are_refused() -> None:
    with pytest.raises(UserInputError, match="sequence length"):
        workload_for_spec("roberta-base", 0)
    with pytest.raises(UserInputError):
        workload_for_spec("no-such-model", 8)
    with pytest.raises(UserInputError, match="positions"):
        workload_for_spec("roberta-base", 4096)


def test_arch_rejects_unknown_units_and_dataflows() -> None:
    with pytest.raises(UserInputError, match="unknown unit"):
        Arch("x", 4, 4, 1, 1, 1, 1, 1, units=("softmax", "fft"))
    with pytest.raises(UserInputError, match="dataflows"):
        Arch("x", 4, 4, 1, 1, 1, 1, 1, dataflows=("rs",))


@pytest.mark.parametrize("flow, rows, cols, m, n, k, scalesim", [
    ("os", 4, 4, 16, 16, 64, 1119), ("os", 32, 8, 100, 50, 30, 1903),
    ("ws", 8, 8, 64, 64, 64, 5503), ("ws", 16, 16, 7, 9, 300, 1006),
])
def test_systolic_counts_are_scalesims(flow, rows, cols, m, n, k, scalesim) -> None:
    """Compute cycles SCALE-Sim 3.0.0 reported for these GEMMs (benchmarks/scalesim_runner.py;
    it reports the last cycle's index, one less than the count)."""
    from mfmaccel.hw.dataflow import ws_cycles

    arch = replace(EDGE, rows=rows, cols=cols, interconnect="systolic")
    ours = os_cycles(arch, m, n, k) if flow == "os" else ws_cycles(arch, m, m, n, k)
    assert ours == scalesim + 1


def test_image_resolution_sets_the_vision_workload() -> None:
    """ViT-B/16 at 224 pixels: 196 patches + CLS; at 384 the attention grows quadratically."""
    small, large = workload_for_spec("vit-base", 1, 224), workload_for_spec("vit-base", 1, 384)
    score = next(op for op in small.ops if isinstance(op, Gemm) and op.role == "attention-score")
    assert (score.m, score.n) == (197, 197)
    assert large.macs > 2.5 * small.macs
    tiny = workload_for_spec("tiny-vit", 1, 64)  # 8-pixel patches: 64 + CLS, interpolated
    assert any(isinstance(op, Gemm) and op.role == "attention-score" and op.m == 65
               for op in tiny.ops)
    with pytest.raises(UserInputError, match="not a multiple of its 16-pixel patches"):
        workload_for_spec("vit-base", 1, 100)
    with pytest.raises(UserInputError, match="takes no images"):
        workload_for_spec("roberta-base", 8, 224)

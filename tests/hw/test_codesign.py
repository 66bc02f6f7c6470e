"""Co-design (`hw.codesign`): per-layer bits priced in bytes, traces that read weights as the
accelerator does, mixed points found where the sensitivities make them dominate uniform ones,
the predictions checked by quantizing for real, a vision tower as a subject, bad input refused.
Tiny randomly initialised models of real architectures throughout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mfmaccel.cli import app
from mfmaccel.compress.sensitivity import Sensitivity, measure_sensitivity
from mfmaccel.hw.arch import get_arch
from mfmaccel.hw.codesign import bit_specs, codesign
from mfmaccel.hw.codesign_front import pareto_mask
from mfmaccel.hw.codesign_subject import text_subject, tower_subject
from mfmaccel.hw.dse import DesignSpace, with_layer_bits
from mfmaccel.hw.ops import Gemm
from mfmaccel.hw.simulate import simulate
from mfmaccel.hw.workload import workload_for_model
from mfmaccel.models import load_model
from mfmaccel.models.tiny import HIDDEN, IMAGE_SIZE, build_tiny
from mfmaccel.runtime.fewrows import use_few_rows_linear
from mfmaccel.runtime.parts import quantizable_parts

SPACE = DesignSpace(rows=(8, 16), cols=(8, 16), a_buffer_kib=(32,), b_buffer_kib=(64,),
                    out_buffer_kib=(16,), bandwidth_gbs=(8.5, 25.6), clock_mhz=(200,),
                    vector_lanes=(16,))
GRID = ["--rows", "8,16", "--cols", "8", "--a-buffer-kib", "32", "--b-buffer-kib", "64",
        "--out-buffer-kib", "16", "--bandwidth-gbs", "8.5", "--clock-mhz", "200",
        "--vector-lanes", "16", "--workers", "1", "--steps", "3"]


@pytest.fixture(scope="module")
def llama():
    """tiny-llama, decode-like (one token priced), 128 tokens each to calibrate and check."""
    return text_subject(load_model("tiny-llama"), seq_len=1, calib_tokens=128, tokens=128)


def _gemms(workload):
    return [(op.m, op.n, op.k, op.batch) for op in workload.ops
            if isinstance(op, Gemm) and op.weight_bits]


def test_the_trace_reads_weights_as_b_whatever_the_host_multiplies() -> None:
    plain = build_tiny("llama")
    few = build_tiny("llama")
    use_few_rows_linear(few.module)  # 2..32 rows run as W @ x^T on the CPU
    assert _gemms(workload_for_model(few, 4)) == _gemms(workload_for_model(plain, 4))
    q = next(op for op in workload_for_model(few, 4).ops if op.where.endswith("q_proj"))
    assert (q.m, q.n, q.k, q.batch) == (4, HIDDEN, HIDDEN, 1)


def test_layer_bits_change_only_that_layers_weight_bytes(llama) -> None:
    path = llama.paths["layers.0.mlp.down_proj"]
    down = next(op for op in llama.workload.ops if op.where == path)
    lowered = with_layer_bits(llama.workload, {path: 4})
    changed = [(a, b) for a, b in zip(llama.workload.ops, lowered.ops, strict=True) if a != b]
    assert changed == [(down, Gemm(**{**vars(down), "weight_bits": 4}))]
    arch = get_arch("edge")
    before, after = simulate(llama.workload, arch), simulate(lowered, arch)
    assert before.dram_bytes - after.dram_bytes == pytest.approx(down.k * down.n * 4 / 8)
    assert after.energy_mj < before.energy_mj and after.area_mm2 == before.area_mm2


def test_every_part_is_a_gemm_of_the_workload(llama) -> None:
    wheres = {op.where for op in llama.workload.ops if isinstance(op, Gemm)}
    assert set(llama.paths) == set(quantizable_parts(llama.module))
    assert set(llama.paths.values()) <= wheres and llama.paths["head"] == "lm_head"


def test_the_front_keeps_exactly_the_undominated_points() -> None:
    values = np.array([[1, 5, 5, 5], [2, 2, 2, 2], [2, 3, 2, 2], [0, 9, 9, 9], [2, 2, 2, 2],
                       [3, 1, 9, 1]], dtype=float)
    assert pareto_mask(values).tolist() == [True, True, False, True, False, True]


def _sensitivity(module, kl: dict[str, dict[int, float]]) -> Sensitivity:
    """A sensitivity written by hand: `kl` block -> bits -> KL."""
    specs = {s.label: s for s in bit_specs(kl["head"])}
    label = {s.bits: s.label for s in specs.values()}
    blocks = {b: {label[bits]: v for bits, v in by_bits.items()} for b, by_bits in kl.items()}
    parts = quantizable_parts(module)
    return Sensitivity(
        signal="kl", tokens=1,
        specs={s.label: {"bits": s.bits, "group_size": s.group_size, "symmetric": s.symmetric}
               for s in specs.values()},
        network={lab: sum(b[lab] for b in blocks.values()) for lab in specs},
        blocks=blocks, modules={n: dict.fromkeys(specs, 0.0) for n in parts})


def test_a_block_indifferent_to_bits_makes_mixed_points_dominate(llama) -> None:
    sensitivity = _sensitivity(llama.module, {
        "layers.0": {2: 1.0, 3: 0.3, 4: 0.1, 8: 0.001},
        "layers.1": {2: 0.0, 3: 0.0, 4: 0.0, 8: 0.0},  # any bits: no harm
        "head": {2: 0.5, 3: 0.1, 4: 0.02, 8: 0.0005}})
    record = codesign(llama, SPACE, steps=4, sensitivity=sensitivity)
    uniform = {u["assignment"]: u for u in record.uniform}
    by_name = {a.name: a for a in record.assignments}
    for bits in (3, 4, 8):  # layers.1 at 2 bits: the same prediction, fewer bytes
        entry = uniform[f"uniform-{bits}"]
        assert entry["front"] and entry["front_dominated"] == len(entry["front"])
        for point in entry["front"]:
            winner = point["dominated_by"]
            assert winner["same_design"] and winner["predicted"] <= point["predicted"]
            assert by_name[winner["assignment"]].bits["layers.1"] == 2
            assert winner["energy_mj"] < point["energy_mj"]
    assert uniform["uniform-2"]["front_dominated"] == 0  # nothing is smaller
    assert all(p.assignment != "uniform-4" for p in record.front)


def test_predictions_are_checked_by_quantizing_for_real(llama) -> None:
    record = codesign(llama, SPACE, steps=8, checks=3)
    checks = {c["assignment"]: c for c in record.checks}
    mixed = [n for n in checks if n.startswith("mixed")]
    assert len(mixed) == 3 and record.signal == "kl" and record.heldout_tokens == 128
    assert all(checks[n]["on_front"] for n in mixed)
    assert set(mixed) <= {p.assignment for p in record.front}
    measured = [checks[f"uniform-{b}"]["measured"] for b in (2, 3, 4, 8)]
    assert measured == sorted(measured, reverse=True) and measured[-1] > 0
    for bits in (2, 3, 4):  # the additive prediction is the right size
        check = checks[f"uniform-{bits}"]
        assert 0.5 < check["measured"] / check["predicted"] < 2


def test_the_module_tier_gives_each_linear_its_bits(llama) -> None:
    sensitivity = measure_sensitivity(llama.module, llama.calibration, bit_specs((2, 3, 4, 8)))
    tiers = {tier: codesign(llama, SPACE, tier=tier, steps=6, sensitivity=sensitivity)
             for tier in ("block", "module")}
    parts = set(quantizable_parts(llama.module))
    assert tiers["module"].tier == "module"
    for a in tiers["module"].assignments:
        assert set(a.bits) == parts
    uniform = {t: {a.name: a.predicted for a in r.assignments if a.origin == "uniform"}
               for t, r in tiers.items()}
    assert uniform["module"] == pytest.approx(uniform["block"], rel=1e-9)


def test_a_vision_tower_is_codesigned_on_its_blocks() -> None:
    model = load_model("tiny-vit")
    pixels = torch.rand(4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    subject = tower_subject(model, pixels[:2], pixels[2:])
    wheres = {op.where for op in subject.workload.ops if isinstance(op, Gemm)}
    assert set(subject.paths.values()) <= wheres and len(subject.paths) == 2 * 6
    assert "embed" not in subject.paths and "head" not in subject.paths
    record = codesign(subject, SPACE, bits=(2, 4, 8), steps=8)
    mixed = [a for a in record.assignments if a.origin != "uniform"]
    assert record.signal == "cosine" and mixed
    assert len(record.checks) == 3 + min(3, len(mixed))  # two blocks: few mixed ones exist
    assert all(c["measured"] >= 0 for c in record.checks)


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "no-such-model"], "no-such-model"),
    (["--model", "tiny-llama", "--weight-bits", "4"], "at least two bit-widths"),
    (["--model", "tiny-llama", "--weight-bits", "1,4"], "--weight-bits 1"),
    (["--model", "tiny-llama", "--checks", "2"], "--checks at least 3"),
    (["--model", "tiny-llama", "--calib-tokens", "1"], "--calib-tokens must be at least 2"),
    (["--model", "tiny-llava"], "DINOv2 or ViT vision tower"),
    (["--model", "tiny-llama", "--calib-tokens", "64", "--tokens", "64", "--max-latency-ms",
      "1e-9"], "the smallest value that admits one"),
    (["--model", "tiny-llama", "--scheduler", "localhost:8786"], "tcp://HOST:PORT"),
])
def test_cli_bad_input_is_one_line(args, message, tmp_path) -> None:
    out = tmp_path / "codesign.json"
    done = CliRunner().invoke(app, ["hw", "codesign", *args, *GRID, "--out", str(out)])
    assert done.exit_code == 2 and message in done.output, done.output
    assert not out.exists()


def test_cli_writes_the_record(tmp_path) -> None:
    out = tmp_path / "codesign.json"
    done = CliRunner().invoke(app, ["hw", "codesign", "--model", "tiny-llama", "--seq-len", "1",
                                    "--calib-tokens", "64", "--tokens", "64", *GRID,
                                    "--out", str(out)])
    assert done.exit_code == 0, done.output
    record = json.loads(out.read_text())
    assert record["front"] and len(record["uniform"]) == 4 and record["designs"] == 2

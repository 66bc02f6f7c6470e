"""The accelerator top (`hw.rtl.top`): a real BERT layer's integer program compiled to its
instructions runs bit-exact in RTL on real text, in exactly the cycles `top_cycles` counts;
each vector instruction matches `hw.intops` on edge values; the performance model prices the
layer close to the RTL; programs that do not fit, and faults, are reported in one line."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

from mfmaccel.compress.calibration import calibration_batches
from mfmaccel.errors import UserInputError
from mfmaccel.hw.intexec.bert import convert_bert
from mfmaccel.hw.intexec.llama import convert_llama
from mfmaccel.hw.intexec.quality import corpus_sentences, scored_ids, sentence_batches
from mfmaccel.hw.intops import INT32, IntRange, residual_add, token_shifts
from mfmaccel.hw.intops.datapath import residual_factors
from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.program import DRAM, SPAD, WORDS, Copy, Vector, encode
from mfmaccel.hw.rtl.top import TopConfig, top_config, top_files
from mfmaccel.hw.rtl.top_bert import compile_bert_layer
from mfmaccel.hw.rtl.top_compile import Compiled, Plan
from mfmaccel.hw.rtl.top_cycles import program_cycles, serial_cycles
from mfmaccel.hw.rtl.top_llama import compile_llama_block
from mfmaccel.hw.rtl.top_model import layer_workload, top_arch
from mfmaccel.hw.rtl.top_run import run_top
from mfmaccel.hw.simulate import simulate
from mfmaccel.hw.workload import workload_for_model
from mfmaccel.models import load_model

needs_verilator = pytest.mark.skipif(shutil.which("verilator") is None,
                                     reason="verilator is not installed (make test installs it)")
TOKENS = 16


@pytest.fixture(scope="module")
def tiny_bert():
    model = load_model("tiny-bert")
    program = convert_bert(model.module, sentence_batches(model.tokenizer,
                                                          corpus_sentences("train", 16)))
    text = " ".join(corpus_sentences("test", 4))
    ids = model.tokenizer(text, return_tensors="pt")["input_ids"][:, :TOKENS]
    summed = (program.tables["word"][ids] + program.tables["position"][torch.arange(TOKENS)]
              + program.tables["token_type"][0])
    h8, h16 = program.embed_norm(summed)
    h8, h16 = program.layers[0](h8, h16, torch.ones_like(ids))  # layer 1 gets real activations
    return model, program.layers[1], h8[0], h16[0]


@pytest.fixture(scope="module")
def tiny_llama():
    model = load_model("tiny-llama")
    program = convert_llama(model.module, calibration_batches(model.tokenizer, 512, 64),
                            max_length=64)
    ids = scored_ids(model.tokenizer, "test", TOKENS)[None, :TOKENS]
    h = program.blocks[0](program.table[ids])  # block 1 gets real activations
    return model, program.blocks[1], h[0]


def _config(model, **overrides) -> TopConfig:
    config = model.module.config
    sizes = {"max_tokens": TOKENS, "max_k": config.intermediate_size,
             "max_row": config.hidden_size, "max_n": 16, "spad_words": 1 << 15,
             "dram_words": 1 << 16}
    return top_config(**(sizes | overrides))


@needs_verilator
def test_bert_layer_is_bit_exact_in_rtl_in_the_counted_cycles(tiny_bert, tmp_path) -> None:
    model, layer, h8, h16 = tiny_bert
    cfg = _config(model)
    compiled = compile_bert_layer(cfg, layer, h8, h16)
    expected8, expected16 = layer(h8[None], h16[None], torch.ones(1, TOKENS))
    run = run_top(cfg, compiled, tmp_path / "top", simulator="verilator")
    assert torch.equal(run.outputs["h8"], expected8[0])
    assert torch.equal(run.outputs["h16"], expected16[0])
    assert run.cycles == program_cycles(cfg, compiled.program)
    # weights loading beside the engine save cycles against the same program run serially
    assert run.cycles < serial_cycles(cfg, compiled.program)


@needs_verilator
def test_llama_block_is_bit_exact_in_rtl_in_the_counted_cycles(tiny_llama, tmp_path) -> None:
    """RMSNorm, rotary, grouped causal attention, SiLU: every Llama operation on the top."""
    model, block, h = tiny_llama
    config = model.module.config
    cfg = _config(model, head_dim=config.hidden_size // config.num_attention_heads)
    compiled = compile_llama_block(cfg, block, h)
    run = run_top(cfg, compiled, tmp_path / "top", simulator="verilator")
    assert torch.equal(run.outputs["h"], block(h[None])[0])
    assert run.cycles == program_cycles(cfg, compiled.program)


@needs_verilator
def test_top_is_lint_clean(tmp_path) -> None:
    cfg = top_config(max_tokens=16, max_k=128, max_row=64, max_n=16, head_dim=16,
                     spad_words=1 << 12, dram_words=1 << 16)
    for name, text in top_files(cfg).items():
        (tmp_path / name).write_text(text)
    result = subprocess.run(["verilator", "--lint-only", "-Wall", "--top-module", "accel_top",
                             *sorted(str(f) for f in tmp_path.glob("*.v"))],
                            capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_performance_model_prices_the_layer_near_the_rtl_count(tiny_bert) -> None:
    """`hw.simulate` on the top's arch against `top_cycles` (equal to the RTL's counter, above):
    what the model leaves out (fetch, the layer's own loads and stores) is a few percent of a
    tiny layer, 1.8% of minilm-l6's (benchmarks/rtl_top.py)."""
    model, layer, h8, h16 = tiny_bert
    cfg = _config(model)
    counted = program_cycles(cfg, compile_bert_layer(cfg, layer, h8, h16).program)
    workload = workload_for_model(model, TOKENS)
    predicted = simulate(layer_workload(workload, 1), top_arch(cfg)).cycles
    assert 0.9 * counted < predicted < counted


def _vector_program(cfg: TopConfig, rows: torch.Tensor, other: torch.Tensor,
                    factors: tuple[int, int, int]) -> Compiled:
    plan = Plan(cfg)
    n = rows.numel()
    length = rows.shape[1]
    a, b = plan.dram(rows), plan.dram(other)
    sa, sb, added, shifted = (plan.spad(n, name) for name in ("a", "b", "added", "shifted"))
    shifts = plan.spad(rows.shape[0], "shifts")
    plan.emit(Copy(DRAM, "spad", 1, n, a.base, 0, 1, sa.base, 0),
              Copy(DRAM, "spad", 1, n, b.base, 0, 1, sb.base, 0),
              Vector("add", rows.shape[0], length, sa.base, length, added.base, length,
                     sb.base, length, constants=(*factors, 16)),
              Vector("token_shift", rows.shape[0], length, sa.base, length, shifted.base, length,
                     aux_base=shifts.base))
    outputs = {}
    for name, region, size in (("added", added, n), ("shifted", shifted, n),
                               ("shifts", shifts, rows.shape[0])):
        target = plan.dram([0] * size)
        plan.emit(Copy(SPAD, "dram", 1, size, region.base, 0, 1, target.base, 0))
        outputs[name] = (target, (size,))
    return plan.finish(outputs)


@needs_verilator
def test_vector_instructions_match_the_golden_model_on_edge_rows(tmp_path) -> None:
    top, bottom = INT32.high, INT32.low
    rows = torch.tensor([[top, bottom, 0, 1, -1, 127, -128, 5],  # the int32 extremes
                         [0, 0, 0, 0, 0, 0, 0, 0],  # nothing to shift
                         [127, -128, 3, -3, 64, -64, 0, 1],  # fits int8 already
                         [255, -256, 257, 100000, -99999, 7, 8, 9]])
    other = torch.tensor([[32767, -32768] * 4] * 4)
    scale_a, scale_b, scale_out = 3e-4, 2e-3, 1e-3
    factors = residual_factors(scale_a, scale_b, scale_out)
    cfg = top_config(max_tokens=8, max_k=8, max_row=8, max_n=8, spad_words=256,
                     dram_words=1024)
    program = _vector_program(cfg, rows, other, factors)
    run = run_top(cfg, program, tmp_path / "top", simulator="verilator")
    # nothing overlaps here: the serial count is the count
    assert run.cycles == program_cycles(cfg, program.program) == serial_cycles(cfg,
                                                                               program.program)
    expected_add = residual_add(rows, scale_a, other, scale_b, scale_out, out=IntRange(16))
    shifted, shifts = token_shifts(rows)
    assert torch.equal(run.outputs["added"], expected_add.reshape(-1))
    assert torch.equal(run.outputs["shifted"], shifted.reshape(-1))
    assert torch.equal(run.outputs["shifts"], shifts.reshape(-1))


@needs_verilator
def test_an_unknown_opcode_faults_in_one_line(tmp_path) -> None:
    cfg = top_config(max_tokens=8, max_k=8, max_row=8, max_n=8, spad_words=64, dram_words=256)
    words = [7] + [0] * (WORDS - 1)  # no such opcode
    compiled = Compiled([], {0: words}, 0, {}, len(words), 0)
    with pytest.raises(RuntimeError, match="faulted"):
        run_top(cfg, compiled, tmp_path / "top", simulator="verilator")


def test_programs_that_do_not_fit_name_the_size_that_works(tiny_bert) -> None:
    model, layer, h8, h16 = tiny_bert
    with pytest.raises(UserInputError, match=r"spad_words \(now 1024\)"):
        compile_bert_layer(_config(model, spad_words=1024), layer, h8, h16)
    with pytest.raises(UserInputError, match="dram_words"):
        compile_bert_layer(_config(model, dram_words=4096), layer, h8, h16)
    with pytest.raises(UserInputError, match="max_k of at least 128"):
        compile_bert_layer(_config(model, max_k=64), layer, h8, h16)
    with pytest.raises(UserInputError, match="max_m of at least 16"):
        compile_bert_layer(_config(model, max_tokens=8), layer, h8, h16)
    with pytest.raises(UserInputError, match="max_row of at least 64"):
        compile_bert_layer(_config(model, max_row=32), layer, h8, h16)
    with pytest.raises(UserInputError, match="tokens x hidden"):
        compile_bert_layer(_config(model), layer, h8[None], h16[None])
    with pytest.raises(UserInputError, match="in_bits of at least 13"):
        TopConfig(RtlConfig(in_bits=8))


def test_instructions_encode_to_their_words_and_refuse_wide_fields() -> None:
    words = encode(Copy(DRAM, "gemm_b", 3, 4, 5, 6, 7, 8, 9))
    assert words == [1, 3 << 4, 3, 4, 5, 6, 7, 8, 9] + [0] * (WORDS - 9)
    vector = encode(Vector("add", 1, 2, 3, 4, 5, 6, 7, 8, (-1, 2, 3, 4), 9))
    assert vector[10:12] == [9, 0xFFFF_FFFF]  # the shifts' address, then the constants
    with pytest.raises(UserInputError, match="32-bit word"):
        encode(Copy(DRAM, "spad", 1 << 33, 1, 0, 0, 0, 0, 0))


def test_released_scratchpad_is_reused_first_fit_with_gaps_merged() -> None:
    plan = Plan(top_config(max_tokens=8, max_k=8, max_row=8, spad_words=100))
    a, b, c = plan.spad(10, "a"), plan.spad(20, "b"), plan.spad(5, "c")
    plan.release(a, b)  # adjacent: one gap of 30
    d = plan.spad(25, "d")
    assert d.base == a.base and plan.spad(5, "e").base == 25 and plan.spad_next == 35
    plan.release(c)
    assert plan.spad(6, "f").base == 35  # c's gap is too small: above the high-water mark
    with pytest.raises(UserInputError, match=r"at least 106 words \(g does not fit\)"):
        plan.spad(65, "g")


@needs_verilator
def test_cli_runs_a_layer_and_refuses_bad_input_in_one_line(tmp_path) -> None:
    from typer.testing import CliRunner

    from mfmaccel.cli import app

    out = tmp_path / "top.json"
    result = CliRunner().invoke(app, ["hw", "top", "--model", "tiny-bert", "--tokens", "8",
                                      "--layers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["all_bit_exact"] and record["all_counted_exactly"]
    assert [layer["index"] for layer in record["layers"]] == [1]
    for args, reason in ((["--model", "tiny-vit"], "neither a BERT encoder"),
                         (["--model", "tiny-bert", "--layers", "7"], "--layers must lie in 0..1"),
                         (["--model", "tiny-bert", "--tokens", "0"], "at least 1"),
                         (["--model", "tiny-bert", "--simulator", "xsim"], "simulator must be")):
        result = CliRunner().invoke(app, ["hw", "top", *args, "--out", str(tmp_path / "x.json")])
        assert result.exit_code == 2 and reason in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not (tmp_path / "x.json").exists()

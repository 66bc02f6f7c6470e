"""A real model's layers through the accelerator top in RTL: a BERT encoder's layers
(`hw.intexec.bert`) or a Llama-family decoder's blocks (`hw.intexec.llama`), their integer
programs calibrated on the corpus's train half, each layer compiled (`top_bert`, `top_llama`)
and simulated (`top_run`) on one test-half sequence, each layer's RTL outputs feeding the next
layer's RTL run. Per layer: bit-exactness against the integer program, the RTL's cycle counter
against `top_cycles`, and `hw.simulate`'s prediction on the top's arch (`top_model`) with what
it leaves out named (`left_out_of_model`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.rtl.program import Copy, Gemm, Instruction, Vector
from mfmaccel.hw.rtl.top import TopConfig, top_config
from mfmaccel.hw.rtl.top_compile import Compiled
from mfmaccel.hw.rtl.top_cycles import cycle_breakdown, program_cycles, serial_cycles
from mfmaccel.hw.rtl.top_model import layer_workload, top_arch
from mfmaccel.hw.rtl.top_run import TopRun, run_top
from mfmaccel.hw.simulate import simulate
from mfmaccel.hw.workload import workload_for_model
from mfmaccel.records import Record

CALIBRATION = 64  # train-half sentences (BERT) or windows of 128 tokens (Llama)
Progress = Callable[[int, int], None] | None


@dataclass
class LayerRun(Record):
    index: int
    inputs: str  # "rtl": the previous layer's RTL outputs; "integer": the integer program's
    bit_exact: bool
    instructions: int
    scratchpad_words: int
    off_chip_words: int
    rtl_cycles: int  # the top's counter
    counted_cycles: int  # `top_cycles.program_cycles`
    counted_cycles_serial: int  # the same program with no copy beside the engine
    model_cycles: int  # `hw.simulate` on `top_arch`
    model_vs_rtl: float
    left_out_of_model: dict[str, int]
    unexplained_cycles: int  # rtl - model - left out
    rtl_cycles_by_use: dict[str, int]
    model_ops: list[dict]
    simulation_seconds: float


@dataclass
class TopLayers(Record):
    model: str
    tokens: int
    simulator: str
    engine: dict
    arch: dict
    layers: list[LayerRun] = field(default_factory=list)
    all_bit_exact: bool = False
    all_counted_exactly: bool = False  # the RTL's counter equal to `top_cycles` on every layer


@dataclass
class Family:
    """How one model family's integer program runs layer by layer, in Python and on the top."""

    layers: list
    first: tuple  # the first layer's inputs (batch of one)
    step: Callable  # (layer, inputs) -> outputs, the integer program
    compile: Callable[[TopConfig, object, tuple], Compiled]  # inputs without the batch
    outputs: Callable[[TopRun], tuple]  # the next layer's inputs (batch of one)
    sizes: dict  # top_config's sizes


def _bert_family(model, tokens: int) -> Family:
    from mfmaccel.hw.intexec.bert import convert_bert
    from mfmaccel.hw.intexec.quality import corpus_sentences, sentence_batches
    from mfmaccel.hw.rtl.top_bert import compile_bert_layer

    program = convert_bert(model.module, sentence_batches(
        model.tokenizer, corpus_sentences("train", CALIBRATION)))
    ids = model.tokenizer(" ".join(corpus_sentences("test", 16)),
                          return_tensors="pt")["input_ids"][:, :tokens]
    _enough(ids.shape[1], tokens)
    summed = (program.tables["word"][ids] + program.tables["position"][torch.arange(tokens)]
              + program.tables["token_type"][0])
    config = model.module.config
    return Family(program.layers, program.embed_norm(summed),
                  lambda layer, x: layer(*x, torch.ones(1, tokens)),
                  lambda cfg, layer, x: compile_bert_layer(cfg, layer, x[0][0], x[1][0]),
                  lambda run: (run.outputs["h8"][None], run.outputs["h16"][None]),
                  {"max_k": config.intermediate_size,
                   "max_row": max(config.hidden_size, tokens)})


def _llama_family(model, tokens: int) -> Family:
    from mfmaccel.compress.calibration import calibration_batches
    from mfmaccel.hw.intexec.llama import convert_llama
    from mfmaccel.hw.intexec.quality import scored_ids
    from mfmaccel.hw.rtl.top_llama import compile_llama_block

    program = convert_llama(model.module, calibration_batches(
        model.tokenizer, CALIBRATION * 128, 128), max_length=max(tokens, 128))
    ids = scored_ids(model.tokenizer, "test", tokens)[None, :tokens]
    config = model.module.config
    head_dim = getattr(config, "head_dim", None) or (config.hidden_size
                                                     // config.num_attention_heads)
    return Family(program.blocks, (program.table[ids],), lambda block, x: (block(x[0]),),
                  lambda cfg, block, x: compile_llama_block(cfg, block, x[0][0]),
                  lambda run: (run.outputs["h"][None],),
                  {"max_k": config.intermediate_size,
                   "max_row": max(config.hidden_size, tokens), "head_dim": head_dim})


def _enough(have: int, tokens: int) -> None:
    if have < tokens:
        raise UserInputError(f"the test text gives {have} tokens; use --tokens of at most {have}")


def unmodelled(cfg: TopConfig, program: list[Instruction]) -> dict[str, int]:
    """The RTL's cycles the performance model leaves out, by cause."""
    counts = cycle_breakdown(cfg, program)
    copies = [i for i in program if isinstance(i, Copy)]
    gemms = [i for i in program if isinstance(i, Gemm)]
    # a Llama block zeroes its tokens x tokens probabilities once, before the causal softmax
    causal = [i for i in program if isinstance(i, Vector) and i.kind == "causal_softmax"]
    zeroed = causal[0].rows ** 2 if causal else 0
    return {
        "instruction fetch and decode": counts["fetch and decode"],
        "causal probabilities zeroed (Llama)": zeroed,
        "norm parameters copied in": counts.get("copy to norm_gamma", 0)
        + counts.get("copy to norm_beta", 0),
        "rotary cos and sin copied in per position": counts.get("copy to rotary_cos", 0)
        + counts.get("copy to rotary_sin", 0),
        "GEMM row shifts copied in": counts.get("copy to gemm_shift", 0),
        "2 cycles closing each copy, 1 starting each GEMM": 2 * len(copies) + len(gemms),
    }


def _chosen(layers: list[int] | None, count: int) -> list[int]:
    chosen = list(range(count)) if not layers else sorted(set(layers))
    if chosen[0] < 0 or chosen[-1] >= count:
        raise UserInputError(f"--layers must lie in 0..{count - 1} (the model has {count}); "
                             f"got {layers}")
    return chosen


def run_layers(model_name: str, work: Path, *, tokens: int = 32,
               layers: list[int] | None = None, simulator: str = "verilator",
               progress: Progress = None) -> TopLayers:
    """`layers` (default all) of `model_name` through the top on `tokens` test tokens; `work`
    is a folder for the simulator's files (the build is reused from layer to layer)."""
    from mfmaccel.models import CAUSAL_LM, ENCODER, load_model

    if tokens < 1:
        raise UserInputError(f"--tokens must be at least 1, got {tokens}")
    model = load_model(model_name)
    if model.kind not in (ENCODER, CAUSAL_LM):
        raise UserInputError(f"{model_name} is neither a BERT encoder nor a Llama-family "
                             "decoder; the top runs minilm-l6 or smollm2-135m, for example")
    family = (_bert_family if model.kind == ENCODER else _llama_family)(model, tokens)
    chosen = _chosen(layers, len(family.layers))
    cfg = top_config(max_tokens=tokens, spad_words=1 << 19, dram_words=1 << 23,
                     **family.sizes)
    workload, arch = workload_for_model(model, tokens), top_arch(cfg)
    record = TopLayers(model_name, tokens, simulator, asdict(cfg.engine), asdict(arch))
    expected = inputs = family.first
    for index, layer in enumerate(family.layers[:chosen[-1] + 1]):
        outputs = family.step(layer, expected)
        if index in chosen:
            simulation = simulate(layer_workload(workload, index), arch)
            entry, run = _run_layer(cfg, family, layer, inputs, outputs, work, index=index,
                                    simulator=simulator, rtl_inputs=index - 1 in chosen,
                                    simulation=simulation)
            record.layers.append(entry)
            inputs = family.outputs(run)
            if progress:
                progress(len(record.layers), len(chosen))
        else:
            inputs = outputs
        expected = outputs
    record.all_bit_exact = all(layer.bit_exact for layer in record.layers)
    record.all_counted_exactly = all(layer.rtl_cycles == layer.counted_cycles
                                     for layer in record.layers)
    return record


def _run_layer(cfg: TopConfig, family: Family, layer, inputs: tuple, outputs: tuple,
               work: Path, *, index: int, simulator: str, rtl_inputs: bool,
               simulation) -> tuple[LayerRun, TopRun]:
    compiled = family.compile(cfg, layer, inputs)
    started = time.perf_counter()
    run = run_top(cfg, compiled, work, simulator=simulator)
    seconds = time.perf_counter() - started
    left_out = unmodelled(cfg, compiled.program)
    got = family.outputs(run)
    entry = LayerRun(
        index=index, inputs="rtl" if rtl_inputs else "integer",
        bit_exact=all(torch.equal(a, b) for a, b in zip(got, outputs, strict=True)),
        instructions=len(compiled.program), scratchpad_words=compiled.spad_words,
        off_chip_words=compiled.dram_words, rtl_cycles=run.cycles,
        counted_cycles=program_cycles(cfg, compiled.program),
        counted_cycles_serial=serial_cycles(cfg, compiled.program),
        model_cycles=simulation.cycles,
        model_vs_rtl=round(simulation.cycles / run.cycles - 1, 4),
        left_out_of_model=left_out,
        unexplained_cycles=run.cycles - simulation.cycles - sum(left_out.values()),
        rtl_cycles_by_use=cycle_breakdown(cfg, compiled.program),
        model_ops=[{"op": r.name, "unit": r.unit, "cycles": r.cycles,
                    "compute": r.compute_cycles, "bound": r.bound} for r in simulation.ops],
        simulation_seconds=round(seconds, 1))
    return entry, run

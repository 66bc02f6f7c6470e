"""Real models through the accelerator top in RTL (`hw.rtl.top`): layers of a BERT encoder
(minilm-l6, `hw.intexec.bert`) or blocks of a Llama-family decoder (smollm2-135m,
`hw.intexec.llama`), their integer programs calibrated on the corpus's train half, compiled to
the top's instructions and simulated on one test-half sequence of `--tokens` tokens, each
layer's RTL outputs feeding the next layer's RTL run. Per layer: whether the outputs are
bit-exact with the integer program, the RTL's cycle counter against the count `top_cycles`
works out from the program, and against `hw.simulate`'s prediction for the same layer on the
top's arch (`top_model`: the traced float layer as its integer program runs it), with the
difference taken apart into what the model leaves out; the scratchpad and off-chip words the
program uses; the cycles by what they are spent on; the seconds the simulator took.

Usage: python benchmarks/rtl_top.py [--model minilm-l6] [--tokens 32] [--layers 0 1 ...]
       [--simulator verilator|icarus] [--record]
`--record` writes the JSON to
benchmarks/results/<date>-rtl-top-<model>-t<tokens>[-options]-at-<commit>.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import torch

from mfmaccel.compress.calibration import calibration_batches
from mfmaccel.hw.intexec.bert import convert_bert
from mfmaccel.hw.intexec.llama import convert_llama
from mfmaccel.hw.intexec.quality import corpus_sentences, scored_ids, sentence_batches
from mfmaccel.hw.rtl.program import Copy, Gemm
from mfmaccel.hw.rtl.top import top_config
from mfmaccel.hw.rtl.top_bert import compile_bert_layer
from mfmaccel.hw.rtl.top_cycles import cycle_breakdown, program_cycles
from mfmaccel.hw.rtl.top_llama import compile_llama_block
from mfmaccel.hw.rtl.top_model import layer_workload, top_arch
from mfmaccel.hw.rtl.top_run import run_top
from mfmaccel.hw.simulate import simulate
from mfmaccel.hw.workload import workload_for_model
from mfmaccel.models import ENCODER, load_model

CALIBRATION = 64  # sentences (BERT) or windows of 128 tokens (Llama) from the train half


def unmodelled(cfg, program) -> dict[str, int]:
    """The RTL's cycles the performance model leaves out, by cause."""
    counts = cycle_breakdown(cfg, program)
    copies = [i for i in program if isinstance(i, Copy)]
    gemms = [i for i in program if isinstance(i, Gemm)]
    return {
        "instruction fetch and decode": counts["fetch and decode"],
        "the layer's inputs loaded (and causal probabilities zeroed), outputs stored":
            counts.get("copy to spad", 0) + counts.get("copy to dram", 0),
        "norm parameters copied in": counts.get("copy to norm_gamma", 0)
        + counts.get("copy to norm_beta", 0),
        "rotary cos and sin copied in per position": counts.get("copy to rotary_cos", 0)
        + counts.get("copy to rotary_sin", 0),
        "GEMM row shifts copied in": counts.get("copy to gemm_shift", 0),
        "2 cycles closing each copy, 1 starting each GEMM": 2 * len(copies) + len(gemms),
    }


@dataclass
class Family:
    """How one model family's integer program runs layer by layer, in Python and on the top."""

    layers: list
    first: tuple  # the first layer's inputs (batch of one)
    step: Callable  # (layer, inputs) -> outputs, the integer program
    compile: Callable  # (cfg, layer, inputs without the batch) -> Compiled
    outputs: Callable  # TopRun -> the next layer's inputs (batch of one)
    sizes: dict  # top_config's sizes


def bert_family(model, tokens: int) -> Family:
    program = convert_bert(model.module, sentence_batches(
        model.tokenizer, corpus_sentences("train", CALIBRATION)))
    ids = model.tokenizer(" ".join(corpus_sentences("test", 16)),
                          return_tensors="pt")["input_ids"][:, :tokens]
    summed = (program.tables["word"][ids] + program.tables["position"][torch.arange(tokens)]
              + program.tables["token_type"][0])
    config = model.module.config
    return Family(program.layers, program.embed_norm(summed),
                  lambda layer, x: layer(*x, torch.ones(1, tokens)),
                  lambda cfg, layer, x: compile_bert_layer(cfg, layer, x[0][0], x[1][0]),
                  lambda run: (run.outputs["h8"][None], run.outputs["h16"][None]),
                  {"max_k": config.intermediate_size,
                   "max_row": max(config.hidden_size, tokens)})


def llama_family(model, tokens: int) -> Family:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--layers", type=int, nargs="+", default=None)
    parser.add_argument("--simulator", choices=("verilator", "icarus"),
                        default="verilator" if shutil.which("verilator") else "icarus")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    model = load_model(args.model)
    family = (bert_family if model.kind == ENCODER else llama_family)(model, args.tokens)
    if family.first[0].shape[1] < args.tokens:
        sys.exit(f"the test text has only {family.first[0].shape[1]} tokens")
    cfg = top_config(max_tokens=args.tokens, spad_words=1 << 19, dram_words=1 << 23,
                     **family.sizes)
    workload = workload_for_model(model, args.tokens)
    arch = top_arch(cfg)
    layers = args.layers if args.layers is not None else list(range(len(family.layers)))
    report = {"command": "python benchmarks/rtl_top.py " + " ".join(sys.argv[1:]),
              "commit": recordfile.commit(), "model": args.model, "tokens": args.tokens,
              "simulator": args.simulator, "engine": asdict(cfg.engine),
              "arch": asdict(arch), "layers": {}}
    expected, inputs = family.first, family.first
    with tempfile.TemporaryDirectory() as tmp:
        for index, layer in enumerate(family.layers[:max(layers) + 1]):
            outputs = family.step(layer, expected)
            if index in layers:
                compiled = family.compile(cfg, layer, inputs)
                started = time.perf_counter()
                run = run_top(cfg, compiled, Path(tmp) / "top", simulator=args.simulator)
                seconds = time.perf_counter() - started
                counted = program_cycles(cfg, compiled.program)
                simulation = simulate(layer_workload(workload, index), arch)
                left_out = unmodelled(cfg, compiled.program)
                got = family.outputs(run)
                entry = {
                    "inputs": "the previous layer's RTL outputs" if index - 1 in layers
                    else "the integer program's",
                    "bit_exact": all(torch.equal(a, b) for a, b in zip(got, outputs,
                                                                       strict=True)),
                    "instructions": len(compiled.program),
                    "scratchpad_words": compiled.spad_words,
                    "off_chip_words": compiled.dram_words,
                    "rtl_cycles": run.cycles, "counted_cycles": counted,
                    "model_cycles": simulation.cycles,
                    "model_vs_rtl": round(simulation.cycles / run.cycles - 1, 4),
                    "left_out_of_model": left_out,
                    "unexplained_cycles": run.cycles - simulation.cycles
                    - sum(left_out.values()),
                    "rtl_cycles_by_use": cycle_breakdown(cfg, compiled.program),
                    "model_ops": [{"op": r.name, "unit": r.unit, "cycles": r.cycles,
                                   "compute": r.compute_cycles, "bound": r.bound}
                                  for r in simulation.ops],
                    "simulation_seconds": round(seconds, 1),
                }
                report["layers"][str(index)] = entry
                print(f"layer {index}: bit-exact {entry['bit_exact']}, rtl {run.cycles}, "
                      f"counted {counted}, model {simulation.cycles} "
                      f"({entry['model_vs_rtl']:+.2%}), {seconds:.1f} s", file=sys.stderr)
                inputs = got
            else:
                inputs = outputs
            expected = outputs
    entries = report["layers"].values()
    report["all_bit_exact"] = all(e["bit_exact"] for e in entries)
    report["all_counted_exactly"] = all(e["rtl_cycles"] == e["counted_cycles"] for e in entries)
    parts = ["rtl-top", args.model, f"t{args.tokens}"]
    if args.layers is not None:
        parts.append("layers" + "-".join(map(str, layers)))
    if args.simulator != "verilator":
        parts.append(args.simulator)
    recordfile.emit(report, recordfile.record_path(parts, report["commit"])
                    if args.record else None)
    sys.exit(0 if report["all_bit_exact"] and report["all_counted_exactly"] else 1)


if __name__ == "__main__":
    main()

"""A real encoder through the accelerator top in RTL (`hw.rtl.top`): every layer of minilm-l6's
integer program (`hw.intexec.bert`, calibrated on the corpus's train half) compiled to the
top's instructions and simulated on one test-half sequence of `--tokens` tokens, each layer's
RTL outputs feeding the next layer's RTL run. Per layer: whether the int8 and int16 outputs are
bit-exact with the integer program, the RTL's cycle counter against the count `top_cycles`
works out from the program, and against `hw.simulate`'s prediction for the same layer on the
top's arch (`top_model`: the traced float layer as its integer program runs it), with the
difference taken apart into what the model leaves out. Also the cycles by what they are spent
on, and the seconds the simulator took.

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
from dataclasses import asdict
from pathlib import Path

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import torch

from mfmaccel.hw.intexec.bert import convert_bert
from mfmaccel.hw.intexec.quality import corpus_sentences, sentence_batches
from mfmaccel.hw.rtl.program import Copy, Gemm
from mfmaccel.hw.rtl.top import top_config
from mfmaccel.hw.rtl.top_bert import compile_bert_layer
from mfmaccel.hw.rtl.top_cycles import DECODE_CYCLES, cycle_breakdown, program_cycles
from mfmaccel.hw.rtl.top_model import layer_workload, top_arch
from mfmaccel.hw.rtl.top_run import run_top
from mfmaccel.hw.simulate import simulate
from mfmaccel.hw.workload import workload_for_model
from mfmaccel.models import load_model

CALIBRATION = 64


def unmodelled(cfg, program) -> dict[str, int]:
    """The RTL's cycles the performance model leaves out, by cause."""
    counts = cycle_breakdown(cfg, program)
    copies = [i for i in program if isinstance(i, Copy)]
    gemms = [i for i in program if isinstance(i, Gemm)]
    return {
        "instruction fetch and decode": counts["fetch and decode"],
        "the layer's inputs loaded and outputs stored": counts.get("copy to spad", 0)
        + counts.get("copy to dram", 0),
        "LayerNorm parameters copied in": counts.get("copy to norm_gamma", 0)
        + counts.get("copy to norm_beta", 0),
        "GEMM row shifts copied in": counts.get("copy to gemm_shift", 0),
        "2 cycles closing each copy, 1 starting each GEMM": 2 * len(copies) + len(gemms),
    }


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
    program = convert_bert(model.module, sentence_batches(
        model.tokenizer, corpus_sentences("train", CALIBRATION)))
    text = " ".join(corpus_sentences("test", 16))
    ids = model.tokenizer(text, return_tensors="pt")["input_ids"][:, :args.tokens]
    if ids.shape[1] < args.tokens:
        sys.exit(f"the test text has only {ids.shape[1]} tokens")
    config = model.module.config
    cfg = top_config(max_tokens=args.tokens, max_k=config.intermediate_size,
                     max_row=max(config.hidden_size, args.tokens), spad_words=1 << 19,
                     dram_words=1 << 22)
    workload = workload_for_model(model, args.tokens)
    arch = top_arch(cfg)
    summed = (program.tables["word"][ids] + program.tables["position"][torch.arange(args.tokens)]
              + program.tables["token_type"][0])
    h8, h16 = program.embed_norm(summed)
    rtl8, rtl16 = h8[0], h16[0]
    layers = args.layers if args.layers is not None else list(range(len(program.layers)))
    report = {"command": "python benchmarks/rtl_top.py " + " ".join(sys.argv[1:]),
              "commit": recordfile.commit(), "model": args.model, "tokens": args.tokens,
              "simulator": args.simulator, "engine": asdict(cfg.engine),
              "spad_words": cfg.spad_words, "arch": asdict(arch), "layers": {}}
    mask = torch.ones_like(ids)
    with tempfile.TemporaryDirectory() as tmp:
        for index, layer in enumerate(program.layers):
            if index > max(layers):
                break
            expected8, expected16 = layer(h8, h16, mask)
            if index in layers:
                compiled = compile_bert_layer(cfg, layer, rtl8, rtl16)
                started = time.perf_counter()
                run = run_top(cfg, compiled, Path(tmp) / "top", simulator=args.simulator)
                seconds = time.perf_counter() - started
                counted = program_cycles(cfg, compiled.program)
                simulation = simulate(layer_workload(workload, index), arch)
                left_out = unmodelled(cfg, compiled.program)
                entry = {
                    "inputs": "the previous layer's RTL outputs" if index - 1 in layers
                    else "the integer program's",
                    "bit_exact_int8": torch.equal(run.outputs["h8"], expected8[0]),
                    "bit_exact_int16": torch.equal(run.outputs["h16"], expected16[0]),
                    "instructions": len(compiled.program),
                    "rtl_cycles": run.cycles, "counted_cycles": counted,
                    "model_cycles": simulation.cycles,
                    "model_vs_rtl": round(simulation.cycles / run.cycles - 1, 4),
                    "left_out_of_model": left_out,
                    "unexplained_cycles": run.cycles - simulation.cycles
                    - sum(left_out.values()),
                    "rtl_cycles_by_use": cycle_breakdown(cfg, compiled.program),
                    "model_ops": [{"op": r.name, "cycles": r.cycles, "compute": r.compute_cycles,
                                   "bound": r.bound} for r in simulation.ops],
                    "simulation_seconds": round(seconds, 1),
                    "decode_cycles_per_instruction": DECODE_CYCLES,
                }
                report["layers"][str(index)] = entry
                print(f"layer {index}: bit-exact {entry['bit_exact_int8']}/"
                      f"{entry['bit_exact_int16']}, rtl {run.cycles}, counted {counted}, "
                      f"model {simulation.cycles} ({entry['model_vs_rtl']:+.2%}), "
                      f"{seconds:.1f} s", file=sys.stderr)
                rtl8, rtl16 = run.outputs["h8"], run.outputs["h16"]
            else:
                rtl8, rtl16 = expected8[0], expected16[0]
            h8, h16 = expected8, expected16
    entries = report["layers"].values()
    report["all_bit_exact"] = all(e["bit_exact_int8"] and e["bit_exact_int16"] for e in entries)
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

"""Spiking minilm-l6 on the spiking accelerator variant against the integer accelerator
(issue 25, item 3): ACs against MACs, spike rates, off-chip and on-chip bytes, energy by part,
latency, the adders equal throughput needs, and the break-even spike rate (Yan et al., arXiv
2409.08290). Prints JSON.

The static-scale integer program (built as `spiking.quality.spiking_agreement` builds it:
`--calibration` train paragraphs) runs as a spiking network at `--levels` on `--sentences` test
paragraphs of up to 64 tokens in one batch until no neuron fires (at most `--max-steps`). Its
spike-fed GEMMs (`spiking.accelerator.bert_gemms`) are priced by `hw.spiking_array.compare` on
each `--arch` preset's spiking variant against the preset, with the spikes of the whole run
and of its first T steps for each of `--cut` (a run stopped early: the rate-coded
approximation), so energy can be read against T; and each again as if every weight, count
and membrane stayed on chip (`all_on_chip`: no such chip exists at this size; the best case for
spikes, Yan et al.'s setting of an on-chip state).

Usage: python benchmarks/spiking_accelerator.py [--levels 16] [--sentences 8]
       [--calibration 64] [--max-steps 4096] [--arch edge large] [--cut 5 8 32 128] [--record]
`--record` also writes benchmarks/results/<date>-spiking-accelerator[-options]-at-<commit>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import torch

from mfmaccel.hw.arch import get_arch
from mfmaccel.hw.intexec.bert import convert_bert
from mfmaccel.hw.intexec.quality import corpus_sentences, sentence_batches
from mfmaccel.hw.spiking_array import SpikingComparison, compare, grouped
from mfmaccel.models import load_model
from mfmaccel.spiking.accelerator import bert_gemms
from mfmaccel.spiking.bert import SpikingBert

MODEL = "minilm-l6"
DEFAULTS = {"levels": 16, "sentences": 8, "calibration": 64, "max_steps": 4096}
ARCHS = ("edge", "large")
CUTS = (5, 8, 32, 128)  # 5: Yan et al.'s T
MAX_LENGTH = 64


def _run(args: argparse.Namespace) -> tuple[SpikingBert, torch.Tensor, object, dict]:
    """The spiking program on the test batch, run until it settles: the program, the input ids,
    the run, and what the run was."""
    model = load_model(MODEL)
    calibration = sentence_batches(model.tokenizer, corpus_sentences("train", args.calibration))
    program = convert_bert(model.module, calibration, per_token=False)
    batch = next(iter(sentence_batches(model.tokenizer, corpus_sentences("test", args.sentences),
                                       size=args.sentences, max_length=MAX_LENGTH)))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    spiking = SpikingBert(program, args.levels)
    started = time.perf_counter()
    with torch.inference_mode():
        hidden, run = spiking.run(ids, mask, max_steps=args.max_steps)
        exact = bool(torch.equal(hidden, program(ids, mask))) if run.settled_at else None
    about = {"shape": list(ids.shape), "steps": run.steps, "settled_at": run.settled_at,
             "bit_exact": exact, "population_spike_rate": run.spike_rate(),
             "accumulates": sum(run.accumulates), "macs": run.macs,
             "seconds": time.perf_counter() - started}
    return spiking, ids, run, about


def _kind(name: str) -> str:
    """'3.query' -> 'query': a GEMM's kind across the layers."""
    return name.split(".", 1)[1]


def _summary(result: SpikingComparison, *, per_gemm: bool) -> dict:
    """The headline figures of one comparison, the GEMMs by kind, and (`per_gemm`) each GEMM."""
    uj = 1e-6
    out = {
        "steps": result.steps, "macs": result.macs, "accumulates": result.accumulates,
        "accumulates_per_mac": result.accumulates_per_mac, "spike_rate": result.spike_rate,
        "break_even_rate": result.break_even_rate, "fixed_share": result.fixed_share,
        "energy_ratio": result.energy_ratio,
        "energy_uj": {"integer": result.integer.total_pj * uj,
                      "spiking": result.spiking.total_pj * uj},
        "energy_by_part_uj": {
            "integer": {k: v * uj for k, v in result.integer.energy_pj.items()},
            "spiking": {k: v * uj for k, v in result.spiking.energy_pj.items()}},
        "dram_bytes": {"integer": result.integer.dram_bytes,
                       "spiking": result.spiking.dram_bytes},
        "sram_bytes": {"integer": result.integer.sram_bytes,
                       "spiking": result.spiking.sram_bytes},
        "latency_ms": result.latency_ms, "adders": result.adders, "area_mm2": result.area_mm2,
        "by_kind": {k: v.to_dict() for k, v in grouped(result, _kind).items()},
    }
    if per_gemm:
        out["gemms"] = [{
            "name": r.name, "macs": r.macs, "accumulates": r.accumulates,
            "spike_rate": r.spike_rate, "break_even_rate": r.break_even_rate,
            "integer_uj": r.integer.total_pj * uj, "spiking_uj": r.spiking.total_pj * uj,
            "integer_dram_bytes": r.integer.dram_bytes, "spiking_dram_bytes": r.spiking.dram_bytes,
            "stationary_on_chip": r.stationary_on_chip, "state_on_chip": r.state_on_chip,
        } for r in result.gemms]
    return out


def _ideal(result: SpikingComparison) -> dict:
    """The same run were every weight, count and membrane kept on chip (`on_chip`)."""
    return {"break_even_rate": result.break_even_rate, "fixed_share": result.fixed_share,
            "energy_ratio": result.energy_ratio,
            "spiking_energy_uj": result.spiking.total_pj * 1e-6,
            "spiking_energy_by_part_uj": {k: v * 1e-6
                                          for k, v in result.spiking.energy_pj.items()},
            "spiking_dram_bytes": result.spiking.dram_bytes,
            "break_even_by_kind": {k: v.break_even_rate
                                   for k, v in grouped(result, _kind).items()},
            "spike_rate_by_kind": {k: v.spike_rate for k, v in grouped(result, _kind).items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in DEFAULTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=value)
    parser.add_argument("--arch", nargs="+", default=list(ARCHS))
    parser.add_argument("--cut", nargs="+", type=int, default=list(CUTS))
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    archs = [get_arch(name) for name in args.arch]
    print(f"{MODEL}: spiking at {args.levels} levels", file=sys.stderr)
    spiking, ids, run, about = _run(args)
    cuts = sorted({t for t in args.cut if t < run.steps} | {run.steps})
    priced = {}
    for arch in archs:
        priced[arch.name] = {}
        for steps in cuts:
            gemms = bert_gemms(spiking, ids, run, steps=steps)
            result = compare(gemms, arch, steps=steps, levels=args.levels)
            ideal = compare(gemms, arch, steps=steps, levels=args.levels, on_chip=True)
            label = "settled" if steps == run.steps else str(steps)
            priced[arch.name][label] = {**_summary(result, per_gemm=steps == run.steps),
                                        "all_on_chip": _ideal(ideal)}
    report = {"model": MODEL, "settings": {**{k: getattr(args, k) for k in DEFAULTS},
                                           "max_length": MAX_LENGTH, "arch": args.arch,
                                           "cut": args.cut},
              "run": about, "spiking_arch": {a.name: f"{a.name}-spiking" for a in archs},
              "priced": priced}
    options = [f"{k.replace('_', '')}{getattr(args, k)}" for k, v in DEFAULTS.items()
               if getattr(args, k) != v]
    if tuple(args.arch) != ARCHS:
        options.insert(0, "-".join(args.arch))
    path = recordfile.record_path(["spiking-accelerator", *options], recordfile.commit()) \
        if args.record else None
    recordfile.emit(report, path)


if __name__ == "__main__":
    main()

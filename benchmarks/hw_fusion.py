"""Fused schedules in the accelerator model (`hw.fusion`): what they save off chip. Prints JSON.

- attention: one attention call (12 heads of 64, as RoBERTa-base or ViT-B) at L in 128, 512,
  2048 on each preset, off-chip bytes unfused (scores and probabilities out and back) against
  fused (Q, K, V in, context out; K/V re-read per query block where they do not fit).
- models: whole prefills (medvlm: image + `seq_len` text tokens; smollm2-135m) on each preset
  under every fusion setting: off-chip bytes, latency and energy, and the cut of `all` (and of
  the default, what the model assumed before fusion was a choice) against `none`.

The model is analytical and deterministic: one run is the measurement (no repeats).
Usage: python benchmarks/hw_fusion.py [--record] [--seq-lens 32,512] [--archs edge,large]
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from mfmaccel.hw.arch import DEFAULT_FUSION, FUSION_SETS, get_arch
from mfmaccel.hw.fusion import AttentionBlock
from mfmaccel.hw.ops import Gemm, VectorOp
from mfmaccel.hw.simulate import simulate, simulate_unit
from mfmaccel.hw.trace import workload_for_spec

sys.path.insert(0, str(Path(__file__).parent))
from recordfile import commit, emit, record_path  # noqa: E402

HEADS, HEAD_DIM = 12, 64
MODELS = ("medvlm", "smollm2-135m")
SETTINGS = {**FUSION_SETS, "default": DEFAULT_FUSION}


def attention_block(length: int) -> AttentionBlock:
    return AttentionBlock(
        Gemm("attention-score", length, length, HEAD_DIM, HEADS, None),
        VectorOp("softmax", HEADS * length, length),
        Gemm("attention-context", length, HEAD_DIM, length, HEADS, None))


def attention_bytes(arch_name: str, length: int) -> dict:
    arch = get_arch(arch_name)
    block = attention_block(length)
    unfused = simulate_unit(block, replace(arch, fusion=()))
    fused = simulate_unit(block, replace(arch, fusion=("attention",)))
    before, after = (sum(r.dram_bytes for r in rs) for rs in (unfused, fused))
    return {"arch": arch_name, "seq_len": length, "unfused_bytes": before,
            "fused_bytes": after, "cut": 1 - after / before,
            "unfused_cycles": sum(r.cycles for r in unfused),
            "fused_cycles": sum(r.cycles for r in fused), "schedule": fused[0].schedule}


def model_rows(model: str, length: int, arch_names: list[str]) -> list[dict]:
    workload = workload_for_spec(model, length)
    rows = []
    for arch_name in arch_names:
        runs = {name: simulate(workload, replace(get_arch(arch_name), fusion=kinds))
                for name, kinds in SETTINGS.items()}
        row = {"model": model, "seq_len": length, "workload": workload.description,
               "arch": arch_name}
        for name, run in runs.items():
            row[name] = {"dram_mb": run.dram_bytes / 1e6, "latency_ms": run.latency_ms,
                         "energy_mj": run.energy_mj,
                         "fused_blocks": sorted({op.schedule.split(":")[0] for op in run.ops
                                                 if op.schedule.startswith("fused ")})}
        base = runs["none"]
        for name in ("all", "default"):
            row[f"{name}_vs_none"] = {
                "dram_cut": 1 - runs[name].dram_bytes / base.dram_bytes,
                "energy_cut": 1 - runs[name].energy_mj / base.energy_mj,
                "latency_cut": 1 - runs[name].latency_ms / base.latency_ms}
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/...")
    parser.add_argument("--seq-lens", default="32,512", help="model prefill lengths")
    parser.add_argument("--archs", default="edge,large", help="presets for the models")
    args = parser.parse_args()
    lengths = [int(x) for x in args.seq_lens.split(",")]
    arch_names = args.archs.split(",")
    report = {
        "commit": commit(),
        "attention": [attention_bytes(a, n) for a in ("edge", "large", "swifttron")
                      for n in (128, 512, 2048)],
        "models": [row for model in MODELS for n in lengths
                   for row in model_rows(model, n, arch_names)],
    }
    path = record_path(["hw-fusion"], report["commit"]) if args.record else None
    emit(report, path)


if __name__ == "__main__":
    main()

"""The accelerator's performance model held against what it can be held against. Prints JSON.

- rtl: the GEMM engine's simulated cycles (Icarus, cocotb bench, every GEMM of the bench)
  against `hw.simulate` on the engine's architecture: must be equal, GEMM by GEMM.
- scalesim: compute cycles of SCALE-Sim 3.0 (`pip install scalesim`) against the model's
  systolic arrays on identical GEMMs and arrays, os and ws (skipped with a reason when scalesim
  is missing).
- swifttron: RoBERTa-base (public config, no weights) on the SwiftTron-like preset at several
  sequence lengths, next to the published 1.83 ms, 33.64 mW, 273 mm^2, and matrix
  multiplication's 55% of area and 79% of power.
- dse: design points per minute of the default sweep on RoBERTa-base, with 2 workers (a local
  Dask cluster, its start included) against 1 worker measured in the same run
  (benchmarks/sweep_scaling.py times the cluster route on its own).

Usage: python benchmarks/hw_model.py [--no-rtl] [--no-scalesim] [--full] [--seq-len 32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from mfmaccel.hw.arch import get_arch
from mfmaccel.hw.dataflow import os_cycles, ws_cycles
from mfmaccel.hw.dse import DesignSpace, explore
from mfmaccel.hw.ops import Gemm
from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.gemm import gemm_arch
from mfmaccel.hw.simulate import simulate, simulate_op
from mfmaccel.hw.trace import workload_for_spec
from mfmaccel.parallel import Executor

PUBLISHED = {"latency_ms": 1.83, "power_mw": 33.64, "area_mm2": 273, "matmul_area_share": 0.55,
             "matmul_power_share": 0.79}
SCALESIM_ARRAYS = [(4, 4), (8, 8), (16, 16), (32, 8)]
SCALESIM_SMALL = [(16, 16, 64), (64, 64, 64), (100, 50, 30), (7, 9, 300)]
# transformer-sized: minutes each in SCALE-Sim (a Python loop per cycle); --full only
SCALESIM_LARGE = [(128, 768, 768)]


def rtl_check(rows: int, cols: int, vectors: int) -> dict:
    """Simulate the generated engine and compare each GEMM's cycles with the model's."""
    from rtl_units import simulator_log_to_stderr

    from mfmaccel.hw.rtl.verify import simulate as simulate_rtl
    from mfmaccel.hw.rtl.verify import write_rtl

    cfg = RtlConfig(rows=rows, cols=cols)
    arch = gemm_arch(cfg)
    with tempfile.TemporaryDirectory() as folder:
        source = next(p for p in write_rtl(Path(folder) / "rtl", cfg) if p.stem == "gemm")
        record = Path(folder) / "cycles.json"
        with simulator_log_to_stderr():
            passed, failed = simulate_rtl(source, Path(folder) / "build", vectors, cfg=cfg,
                                          record=record)
        simulated = json.loads(record.read_text())
    rows_out = []
    for g in simulated:
        model = simulate_op(Gemm("ffn", g["m"], g["n"], g["k"]), arch).compute_cycles
        rows_out.append({**g, "model": model, "equal": model == g["cycles"]})
    return {"array": f"{rows}x{cols}", "bench_passed": passed == 1 and failed == 0,
            "gemms": len(rows_out), "all_equal": all(r["equal"] for r in rows_out),
            "cases": rows_out}


def _cycles(arch, flow: str, m: int, n: int, k: int) -> int:
    return os_cycles(arch, m, n, k) if flow == "os" else ws_cycles(arch, m, m, n, k)


def scalesim_check(full: bool) -> dict:
    """SCALE-Sim's compute cycles against the model's systolic array (SCALE-Sim reports the
    index of the last cycle: count - 1) and, for scale, against our broadcast array."""
    try:
        from scalesim_runner import scalesim_cycles
    except ImportError as err:
        return {"skipped": f"scalesim is not installed ({err}); pip install -e '.[bench]'"}
    cases = []
    for rows, cols in SCALESIM_ARRAYS:
        systolic = replace(get_arch("large"), name="systolic", rows=rows, cols=cols,
                           interconnect="systolic")
        broadcast = replace(systolic, name="broadcast", interconnect="broadcast")
        for m, n, k in SCALESIM_SMALL + (SCALESIM_LARGE if full else []):
            for flow in ("os", "ws"):
                began = time.perf_counter()
                theirs = scalesim_cycles(m, n, k, rows, cols, flow)["compute_cycles"]
                ours = _cycles(systolic, flow, m, n, k)
                cases.append({"array": f"{rows}x{cols}", "m": m, "n": n, "k": k,
                              "dataflow": flow, "scalesim": theirs, "model_systolic": ours,
                              "difference": ours / theirs - 1,
                              "model_broadcast": _cycles(broadcast, flow, m, n, k),
                              "scalesim_seconds": time.perf_counter() - began})
    worst = max(abs(c["difference"]) for c in cases)
    return {"cases": len(cases), "worst_abs_difference": worst,
            "within_5_percent": worst <= 0.05,
            "equal_up_to_last_cycle_index": all(c["model_systolic"] == c["scalesim"] + 1
                                                for c in cases),
            "broadcast_vs_scalesim_worst": max(abs(c["model_broadcast"] / c["scalesim"] - 1)
                                               for c in cases),
            "table": cases}


def swifttron_check(lengths: list[int]) -> dict:
    arch = get_arch("swifttron")
    rows = []
    for length in lengths:
        result = simulate(workload_for_spec("roberta-base", length), arch)
        areas = result.area_breakdown_mm2
        logic = sum(v for k, v in areas.items() if k != "buffers")
        rows.append({"seq_len": length, "latency_ms": result.latency_ms,
                     "power_mw": result.power_mw, "energy_mj": result.energy_mj,
                     "area_mm2": result.area_mm2, "logic_area_mm2": logic,
                     "matmul_area_share": result.matmul_area_share,
                     "matmul_share_of_logic_area": areas["mac_array"] / logic,
                     "matmul_power_share": result.matmul_power_share,
                     "matmul_share_of_logic_power": _logic_power_share(result.energy_breakdown_mj),
                     "utilisation": result.utilisation,
                     "mac_pj": arch.tech.mac_pj, "macs": result.macs,
                     "published_energy_per_mac_pj": PUBLISHED["power_mw"] * 1e-3
                     * PUBLISHED["latency_ms"] * 1e-3 / result.macs * 1e12})
    return {"arch": arch.notes, "published": PUBLISHED, "predicted": rows}


def _logic_power_share(energy: dict[str, float]) -> float:
    """The MAC array's share of the energy spent in logic (SwiftTron has no memories)."""
    return energy["mac"] / (energy["mac"] + energy["requant"] + energy["vector"])


def dse_speed(length: int) -> dict:
    workload = workload_for_spec("roberta-base", length)
    space = DesignSpace()
    runs = {}
    for workers in (1, 2):
        began = time.perf_counter()
        result = explore(workload, space, executor=Executor(workers=workers))
        runs[workers] = {"seconds": time.perf_counter() - began,
                         "points_per_minute": result.points_per_minute,
                         "front": len(result.front), "evaluated": result.evaluated,
                         "infeasible": result.infeasible}
    return {"space_size": space.size, "workers": runs,
            "speedup_2_over_1": runs[1]["seconds"] / runs[2]["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-rtl", action="store_true")
    parser.add_argument("--no-scalesim", action="store_true")
    parser.add_argument("--full", action="store_true", help="also transformer-sized GEMMs in "
                        "SCALE-Sim (minutes each)")
    parser.add_argument("--seq-len", type=int, default=32, help="for the DSE workload")
    parser.add_argument("--vectors", type=int, default=2000, help="RTL bench coverage")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    out = {}
    if not args.no_rtl:
        out["rtl"] = [rtl_check(4, 4, args.vectors), rtl_check(8, 4, args.vectors)]
    if not args.no_scalesim:
        out["scalesim"] = scalesim_check(args.full)
    out["swifttron"] = swifttron_check([16, 32, 64, 128])
    out["dse"] = dse_speed(args.seq_len)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

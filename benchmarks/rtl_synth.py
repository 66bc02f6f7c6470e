"""The generated units on a real FPGA beside the analytic model's figures for the same
configuration, and generic-gate counts at the edge preset's full size.

For an iCE40 part (yosys synth_ice40, nextpnr-ice40; `hw.rtl.fpga`): the GEMM engine at the
largest rows x cols that fits (grown by doubling rows or columns while synthesis still fits),
the softmax and layernorm units at the most lanes that fit, i-GELU and the requantizer; each
with LUT4 / carry / flip-flop / SB_MAC16 / block-RAM counts and the clock it achieves after
routing.
Beside each, `hw.arch` on the same configuration: the area of its parts in the 45 nm tables,
the edge preset's clock, MACs (or elements) per cycle and the throughput they give at either
clock. And yosys's generic cells (`verify.synthesis_cells`) for the edge preset's 16 x 16
MAC array and GEMM engine, run beside all that and stopped after --full-timeout seconds.
An FPGA synthesis that runs past --unit-timeout is stopped and reported as such. Prints JSON.

Usage: python benchmarks/rtl_synth.py [--part up5k] [--freq 100] [--unit-timeout 180]
       [--full-timeout 600] [--generic-only] [--record]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import recordfile

from mfmaccel.errors import UserInputError
from mfmaccel.hw.arch import PRESETS, TECH_45NM, UNIT_OPS
from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.fpga import (
    DSP_MIN_BITS,
    FPGA_MAX_K,
    SynthesisTimeout,
    fpga_config,
    get_part,
    overflow,
    resource_counts,
    synthesize_netlist,
    synthesize_unit,
    write_unit,
)
from mfmaccel.hw.rtl.gemm import gemm_arch, gemm_cycles
from mfmaccel.hw.simulate import area_mm2

EDGE = PRESETS["edge"]
MODEL_UNIT = {"softmax": "softmax", "layernorm": "layernorm", "igelu": "gelu",
              "requant": "requant"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def synthesized(unit: str, cfg: RtlConfig, part: str, timeout: float) -> dict:
    """The unit's counts after synthesis and whether they fit the part (`fits`), or how long
    synthesis ran before it was stopped."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rtl-synth-") as tmp:
        try:
            cells, _ = synthesize_netlist(write_unit(unit, cfg, Path(tmp)), unit, get_part(part),
                                          dsp_min_bits=DSP_MIN_BITS, work=Path(tmp),
                                          timeout_s=timeout)
        except SynthesisTimeout:
            found = {"fits": False, "synthesis_stopped_after_s": round(timeout)}
        else:
            counts = resource_counts(cells)
            found = {**counts, "fits": not overflow(counts, get_part(part))}
    found["seconds"] = round(time.perf_counter() - start, 1)
    log(f"  {unit} {cfg_knobs(unit, cfg)}: {found}")
    return found


def cfg_knobs(unit: str, cfg: RtlConfig) -> dict:
    if unit == "gemm":
        return {k: getattr(cfg, k) for k in ("rows", "cols", "max_m", "max_n", "max_k")}
    return {"lanes": cfg.softmax_len} if unit in ("softmax", "layernorm") else {}


def largest_arrays(part: str, timeout: float) -> tuple[list[tuple[int, int]], dict]:
    """The arrays with the most MACs that fit, and every array tried: from 1 x 1, double the
    rows or the columns (of the two steps that fit, the one with fewer LUT4s) until neither
    fits."""
    tried = {(1, 1): synthesized("gemm", fpga_config(rows=1, cols=1), part, timeout)}
    rows, cols = 1, 1
    while tried[rows, cols]["fits"]:
        for step in ((2 * rows, cols), (rows, 2 * cols)):
            if step not in tried:
                tried[step] = synthesized("gemm", fpga_config(rows=step[0], cols=step[1]), part,
                                          timeout)
        fitting = [(tried[s]["lut4"], s) for s in ((2 * rows, cols), (rows, 2 * cols))
                   if tried[s]["fits"]]
        if not fitting:
            break
        rows, cols = min(fitting)[1]
    fit = [shape for shape, found in tried.items() if found["fits"]]
    most = max((r * c for r, c in fit), default=0)
    return [shape for shape in fit if shape[0] * shape[1] == most], tried


def most_lanes(unit: str, part: str, timeout: float) -> tuple[int | None, dict]:
    """The most lanes (1, 2, 4, ...) that fit, and every count tried."""
    lanes, tried = None, {}
    for trial in (1, 2, 4, 8, 16, 32, 64):
        tried[trial] = synthesized(unit, fpga_config(lanes=trial), part, timeout)
        if not tried[trial]["fits"]:
            break
        lanes = trial
    return lanes, tried


def gemm_model(cfg: RtlConfig, fmax_mhz: float) -> dict:
    """hw.arch / hw.simulate on the same engine: area of its parts (45 nm), and MACs per
    cycle for one GEMM that fills its buffers, at the model's clock and at the FPGA's."""
    areas = area_mm2(gemm_arch(cfg, clock_mhz=EDGE.clock_mhz))
    macs = cfg.max_m * cfg.max_n * cfg.max_k
    per_cycle = macs / gemm_cycles(cfg, cfg.max_m, cfg.max_n, cfg.max_k)
    return {"tech": TECH_45NM.name, "area_mm2": {k: round(areas[k], 5)
                                                  for k in ("mac_array", "requant", "buffers")},
            "clock_mhz": EDGE.clock_mhz, "peak_macs_per_cycle": cfg.rows * cfg.cols,
            "gemm": f"{cfg.max_m}x{cfg.max_k} @ {cfg.max_k}x{cfg.max_n}",
            "gemm_macs_per_cycle": round(per_cycle, 3),
            "gemm_gmacs_per_s_at_model_clock": round(per_cycle * EDGE.clock_mhz / 1e3, 3),
            "gemm_gmacs_per_s_at_fpga_fmax": round(per_cycle * fmax_mhz / 1e3, 4)}


def unit_model(unit: str, lanes: int, fmax_mhz: float) -> dict:
    mult, add = UNIT_OPS[MODEL_UNIT[unit]]
    um2 = lanes * (mult * TECH_45NM.mult32_um2 + add * TECH_45NM.add32_um2)
    return {"tech": TECH_45NM.name, "area_mm2": round(um2 / 1e6, 5),
            "clock_mhz": EDGE.clock_mhz, "elements_per_cycle": lanes,
            "melements_per_s_at_model_clock": lanes * EDGE.clock_mhz,
            "melements_per_s_at_fpga_fmax": round(lanes * fmax_mhz, 2)}


def place(unit: str, cfg: RtlConfig, part: str, freq: float) -> dict:
    start = time.perf_counter()
    try:
        result = synthesize_unit(unit, cfg, part, freq_mhz=freq)
    except (UserInputError, RuntimeError) as err:
        log(f"  {unit}: {err}")
        return {"refused": str(err), "seconds": round(time.perf_counter() - start, 1)}
    log(f"  {unit}: {result.fmax_mhz} MHz, {result.lut4} LUT4, {result.dsp} DSP")
    return result.to_dict()


def start_generic_cells(timeout: float) -> dict:
    """The edge-size syntheses, started now in the background, each a child in a process
    group of its own that a timer stops (with its yosys) after `timeout` seconds."""
    edge = RtlConfig(rows=EDGE.rows, cols=EDGE.cols)
    folder = Path(tempfile.mkdtemp(prefix="rtl-synth-edge-"))
    code = ("import sys, time; from pathlib import Path; "
            "from mfmaccel.hw.rtl.verify import synthesis_cells; start = time.perf_counter(); "
            "cells = synthesis_cells(Path(sys.argv[1])); "
            "print(cells, round(time.perf_counter() - start, 1))")
    runs = {}
    for unit in ("mac_array", "gemm"):
        (folder / unit).mkdir()
        source = write_unit(unit, edge, folder / unit)[0]
        child = subprocess.Popen([sys.executable, "-c", code, str(source)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        timer = threading.Timer(timeout, _stop, (child,))
        timer.start()
        runs[unit] = (child, timer)
    config = {k: getattr(edge, k) for k in ("rows", "cols", "max_m", "max_n", "max_k")}
    return {"config": config, "runs": runs, "timeout": timeout, "folder": folder}


def _stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGKILL)  # the child and its yosys


def finish_generic_cells(started: dict) -> dict:
    """Each edge-size synthesis's cells and seconds, or the time it was stopped after."""
    report = {"config": started["config"]}
    for unit, (child, timer) in started["runs"].items():
        out, err = child.communicate()
        timer.cancel()
        if child.returncode == 0:
            cells, seconds = out.split()[-2:]
            report[unit] = {"cells": int(cells), "seconds": float(seconds)}
        elif child.returncode == -signal.SIGKILL:
            report[unit] = {"stopped_after_s": started["timeout"]}
        else:
            report[unit] = {"failed": err.strip()[-300:]}
    shutil.rmtree(started["folder"], ignore_errors=True)
    return report


def gemm_section(part: str, freq: float, timeout: float) -> dict:
    log(f"GEMM engine: the largest array that fits the {part}")
    shapes, tried = largest_arrays(part, timeout)
    placed = {}
    for rows, cols in shapes:
        cfg = fpga_config(rows=rows, cols=cols)
        fpga = place("gemm", cfg, part, freq)
        placed[f"{rows}x{cols}"] = {"fpga": fpga, **({} if "refused" in fpga else {
            "model": gemm_model(cfg, fpga["fmax_mhz"])})}
    return {"placed": placed, "tried": {f"{r}x{c}": found for (r, c), found in tried.items()}}


def lanes_section(unit: str, part: str, freq: float, timeout: float) -> dict:
    log(f"{unit}: the most lanes that fit")
    lanes, tried = most_lanes(unit, part, timeout)
    section = {"tried_lanes": tried}
    if lanes is not None:
        section["fpga"] = place(unit, fpga_config(lanes=lanes), part, freq)
        if "refused" not in section["fpga"]:
            section["model"] = unit_model(unit, lanes, section["fpga"]["fmax_mhz"])
    return section


def one_size_section(unit: str, part: str, freq: float, timeout: float) -> dict:
    """A unit with no size knob (one element per cycle)."""
    log(f"{unit} (one size)")
    found = synthesized(unit, RtlConfig(), part, timeout)
    section = {"synthesized": found}
    if found["fits"]:
        section["fpga"] = place(unit, RtlConfig(), part, freq)
        if "refused" not in section["fpga"]:
            section["model"] = unit_model(unit, 1, section["fpga"]["fmax_mhz"])
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="up5k", choices=("up5k", "hx8k"))
    parser.add_argument("--freq", type=float, default=100, help="target clock (MHz)")
    parser.add_argument("--unit-timeout", type=float, default=180,
                        help="seconds each FPGA synthesis may take")
    parser.add_argument("--full-timeout", type=float, default=600,
                        help="seconds each generic synthesis of the edge-size units may take")
    parser.add_argument("--generic-only", action="store_true",
                        help="only the generic cells at the edge preset's size")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    generic = start_generic_cells(args.full_timeout)  # runs beside the FPGA flow
    report = {"part": args.part, "target_mhz": args.freq, "dsp_min_bits": DSP_MIN_BITS,
              "fpga_max_k": FPGA_MAX_K, "commit": recordfile.commit(),
              "full_timeout_s": args.full_timeout, "units": {}}
    if not args.generic_only:
        report["units"]["gemm"] = gemm_section(args.part, args.freq, args.unit_timeout)
        for unit in ("softmax", "layernorm"):
            report["units"][unit] = lanes_section(unit, args.part, args.freq, args.unit_timeout)
        for unit in ("igelu", "requant"):  # the requantizer: the GEMM engine's longest path
            report["units"][unit] = one_size_section(unit, args.part, args.freq,
                                                     args.unit_timeout)
    log("generic cells at the edge preset's size (started with the run)")
    report["generic_cells_edge"] = finish_generic_cells(generic)
    report["seconds"] = round(time.perf_counter() - start, 1)
    parts = ["rtl-synth", "generic" if args.generic_only else args.part]
    path = recordfile.record_path(parts, report["commit"])
    recordfile.emit(report, path if args.record else None)


if __name__ == "__main__":
    main()

"""The unfused GEMM traffic of `hw.dataflow` held against ZigZag (KU Leuven's DSE framework,
`pip install zigzag-dse`, 3.9.1 here), an independent analytical model with its own mapping
search (LOMA). Prints JSON.

The accelerator ZigZag sees is the `edge` preset as closely as its format allows: a 16 x 16
output-stationary array of int8 MACs (output rows on one dimension, output columns on the
other, one int32 accumulator per MAC), a 64 KiB activation buffer (A), a 128 KiB weight
buffer (B) and a 64 KiB output buffer, each feeding the whole array, and DRAM at 8.5 GB/s at
400 MHz (170 bits per cycle). Both models move int8 inputs and int8 outputs off chip; ZigZag
also decides when int32 partial sums leave the chip (ours never lets them). Per GEMM: off-chip
bytes by operand and in total, and cycles (ZigZag's latency includes its on-/off-loading and
stalls; ours is max(compute, bytes / link)).

Usage: python benchmarks/zigzag_crosscheck.py [--record] [--lpf 7]   (about 4 minutes at 7)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import yaml  # noqa: E402

from mfmaccel.hw.arch import get_arch  # noqa: E402
from mfmaccel.hw.ops import Gemm  # noqa: E402
from mfmaccel.hw.simulate import simulate_op  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from recordfile import commit, emit, record_path  # noqa: E402

# (name, M tokens, N output features, K input features)
GEMMS = [
    ("projection 768x768 at L=512", 512, 768, 768),
    ("MLP up 576->1536 at L=512 (smollm2)", 512, 1536, 576),
    ("MLP down 1536->576 at L=128 (smollm2)", 128, 576, 1536),
    ("projection 384x384 at L=65 (DINOv2-S tower)", 65, 384, 384),
]
SRAM_PJ_PER_BYTE = 2.5  # the 45 nm table's 32 KiB bank (hw.arch)
DRAM_PJ_PER_BYTE = 162.5


def _port(name: str, kind: str, bits: int, allocation: list[str]) -> dict:
    return {"name": name, "type": kind, "bandwidth_min": bits, "bandwidth_max": bits,
            "allocation": allocation}


def _buffer(kib: float, operand: str, bits: int, *, output: bool = False) -> dict:
    allocation = ([f"{operand}, tl", f"{operand}, fl", f"{operand}, fh", f"{operand}, th"]
                  if output else [f"{operand}, tl", f"{operand}, fh"])
    return {"size": int(kib * 1024 * 8), "r_cost": SRAM_PJ_PER_BYTE * bits / 8,
            "w_cost": SRAM_PJ_PER_BYTE * bits / 8, "area": 0, "latency": 1,
            "operands": [operand], "ports": [_port("rw_port_1", "read_write", bits, allocation)],
            "served_dimensions": ["D1", "D2"]}


def accelerator(arch) -> dict:
    """The preset as a ZigZag accelerator description."""
    link_bits = int(arch.bytes_per_cycle * 8)
    dram_allocation = [f"{op}, {d}" for op in ("I1", "I2") for d in ("fh", "tl")] + [
        f"O, {d}" for d in ("fh", "tl", "fl", "th")]
    accumulator_ports = [_port("r_port_1", "read", 32, ["O, tl"]),
                         _port("r_port_2", "read", 32, ["O, th"]),
                         _port("w_port_1", "write", 32, ["O, fh"]),
                         _port("w_port_2", "write", 32, ["O, fl"])]
    return {
        "name": f"{arch.name}_like",
        "memories": {
            "accumulator": {"size": 32, "r_cost": 0.0, "w_cost": 0.0, "area": 0, "latency": 1,
                            "operands": ["O"], "ports": accumulator_ports,
                            "served_dimensions": []},
            "a_buffer": _buffer(arch.a_buffer_kib, "I1", 8 * arch.rows),
            "b_buffer": _buffer(arch.b_buffer_kib, "I2", 8 * arch.cols),
            "out_buffer": _buffer(arch.out_buffer_kib, "O", 32 * arch.cols, output=True),
            "dram": {"size": 10**10, "r_cost": DRAM_PJ_PER_BYTE * link_bits / 8,
                     "w_cost": DRAM_PJ_PER_BYTE * link_bits / 8, "area": 0, "latency": 1,
                     "operands": ["I1", "I2", "O"],
                     "ports": [_port("rw_port_1", "read_write", link_bits, dram_allocation)],
                     "served_dimensions": ["D1", "D2"]},
        },
        "operational_array": {"input_precision": [8, 8], "unit_energy": arch.tech.mac_pj,
                              "unit_area": 1, "dimensions": ["D1", "D2"],
                              "sizes": [arch.rows, arch.cols]},
    }


def mapping(arch) -> list[dict]:
    """Output-stationary: output rows (D0) on D1, output columns (D2) on D2."""
    return [{"name": "default", "spatial_mapping": {"D1": [f"D0, {arch.rows}"],
                                                    "D2": [f"D2, {arch.cols}"]},
             "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"}}]


def workload(m: int, n: int, k: int) -> list[dict]:
    return [{"id": 0, "name": "gemm", "operator_type": "Gemm",
             "equation": "O[d0][d2]+=I[d0][d1]*W[d1][d2]", "loop_dims": ["D0", "D1", "D2"],
             "loop_sizes": [m, k, n],
             "operand_precision": {"I": 8, "W": 8, "O": 32, "O_final": 8},
             "operand_source": {"I": 0}}]


def off_chip_bytes(cme) -> dict[str, float]:
    """Bytes each operand moves at the top memory level (DRAM), from ZigZag's element counts
    and precisions per direction."""
    from zigzag.mapping.data_movement import DataMoveAttr

    out = {}
    for operand, levels in cme.mapping.unit_mem_data_movement.items():
        top = levels[-1]
        counts = top.attributes[DataMoveAttr.DATA_ELEM_MOVE_COUNT]
        bits = top.attributes[DataMoveAttr.DATA_PRECISION]
        out[str(operand)] = sum(counts.data[d] * bits.data[d] for d in counts.data) / 8
    return out


def zigzag_gemm(arch, m: int, n: int, k: int, lpf: int, folder: Path) -> dict:
    from zigzag.api import get_hardware_performance_zigzag

    paths = {}
    for name, content in (("accelerator", accelerator(arch)), ("mapping", mapping(arch)),
                          ("workload", workload(m, n, k))):
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(content, sort_keys=False))
    began = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        energy, latency, cmes = get_hardware_performance_zigzag(
            str(paths["workload"]), str(paths["accelerator"]), str(paths["mapping"]),
            opt="energy", dump_folder=str(folder / "out"), lpf_limit=lpf)
    cme = cmes[0][1][0][0] if isinstance(cmes[0][1], list) else cmes[0][0]
    by_operand = off_chip_bytes(cme)
    return {"dram_bytes": sum(by_operand.values()), "by_operand": by_operand,
            "cycles": float(latency), "ideal_cycles": float(cme.ideal_temporal_cycle),
            "energy_pj": float(energy), "seconds": time.perf_counter() - began}


def ours(arch, m: int, n: int, k: int) -> dict:
    result = simulate_op(Gemm("projection", m, n, k), arch)
    return {"dram_bytes": result.dram_bytes, "cycles": result.cycles,
            "compute_cycles": result.compute_cycles, "mapping": result.mapping,
            "energy_pj": sum(result.energy_pj.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/...")
    parser.add_argument("--lpf", type=int, default=7, help="ZigZag LOMA loop-prime-factor limit "
                        "(its default 6 misses blockings; 8 takes over 500 s)")
    args = parser.parse_args()
    from importlib.metadata import version

    import zigzag  # noqa: F401 (fails early, with the reason, when it is not installed)

    arch = replace(get_arch("edge"), dataflows=("os",))
    cases = []
    with tempfile.TemporaryDirectory() as folder:
        for name, m, n, k in GEMMS:
            theirs = zigzag_gemm(arch, m, n, k, args.lpf, Path(folder))
            mine = ours(arch, m, n, k)
            least = m * k + k * n + m * n  # every operand once
            cases.append({"gemm": name, "m": m, "n": n, "k": k, "every_operand_once": least,
                          "ours": mine, "zigzag": theirs,
                          "dram_ratio_ours_over_zigzag": mine["dram_bytes"] / theirs["dram_bytes"],
                          "cycle_ratio_ours_over_zigzag": mine["cycles"] / theirs["cycles"]})
    ratios = [c["dram_ratio_ours_over_zigzag"] for c in cases]
    report = {"commit": commit(), "zigzag_dse": version("zigzag-dse"), "arch": arch.name,
              "lpf_limit": args.lpf, "cases": cases,
              "dram_ratio_range": [min(ratios), max(ratios)]}
    path = record_path(["zigzag-crosscheck", f"lpf{args.lpf}"], report["commit"])
    emit(report, path if args.record else None)


if __name__ == "__main__":
    main()

"""What SwiftTron's published figures can and cannot include, worked out (issue 24). Prints JSON.

SwiftTron (IJCNN 2023) publishes, for RoBERTa-base on SST-2 in 65 nm: 1.83 ms, 33.64 mW,
273 mm^2, matrix multiplication 55% of the area and 79% of the power. It does not publish its
clock, sequence length or array configuration. This script takes the MACs of RoBERTa-base's
forward (traced from the public config on the meta device, at several sequence lengths) and the
`swifttron` preset's 65 nm technology table (`hw.arch`: Horowitz's 45 nm figures scaled to
first order), and derives:

- energy: the published power x latency per inference, per MAC (all of it, and the 79% the
  paper gives matrix multiplication), against the table's int8 MAC energy; the latency that
  33.64 mW would allow at the table's MAC energy; and the power of the preset's 8 x 768 array
  running at the published latency;
- throughput: the MACs per second the published latency needs, and the array that would give
  them at 250 MHz and at other clocks;
- area: the matrix-multiplication area per MAC if the 55% holds only the 8 x 768 array, or
  every array size the public RTL has (8x768, 128x32, 64x64, 64x32, 64x16, 32x32, 32x16, 32x8),
  against the table's MAC area; and how much on-chip SRAM the other 45% would hold at the
  table's SRAM density;
- the `swifttron` preset's own prediction at each length (`hw.simulate`), for the ratios the
  docs quote.

Usage: python benchmarks/swifttron_gap.py [--lengths 16 32 64 128] [--record]
"""

from __future__ import annotations

import argparse
import os

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from hw_model import PUBLISHED  # noqa: E402  (the published figures, one place)

from mfmaccel.hw.arch import get_arch  # noqa: E402
from mfmaccel.hw.simulate import simulate  # noqa: E402
from mfmaccel.hw.trace import workload_for_spec  # noqa: E402

PUBLIC_ARRAYS = [(8, 768), (128, 32), (64, 64), (64, 32), (64, 16), (32, 32), (32, 16), (32, 8)]
CLOCKS_MHZ = (100, 250, 500, 1000)


def energy_view(macs: int, mac_pj: float) -> dict:
    """The published energy per inference spread over `macs` MACs, against `mac_pj`."""
    joules = PUBLISHED["power_mw"] * 1e-3 * PUBLISHED["latency_ms"] * 1e-3
    per_mac = joules / macs * 1e12
    matmul_per_mac = per_mac * PUBLISHED["matmul_power_share"]
    allowed_s = macs * mac_pj * 1e-12 / (PUBLISHED["power_mw"] * 1e-3)
    return {"published_uj_per_inference": round(joules * 1e6, 2),
            "published_pj_per_mac": round(per_mac, 4),
            "published_matmul_pj_per_mac": round(matmul_per_mac, 4),
            "table_mac_pj": round(mac_pj, 4),
            "table_over_published_matmul": round(mac_pj / matmul_per_mac, 1),
            "latency_ms_that_33_64_mw_allows_at_table_mac_pj": round(allowed_s * 1e3, 1)}


def throughput_view(macs: int) -> dict:
    """MACs per second the published latency needs, and the MAC units at each clock."""
    rate = macs / (PUBLISHED["latency_ms"] * 1e-3)
    return {"gmacs_per_s_needed": round(rate / 1e9, 1),
            "mac_units_needed_at_full_use": {f"{mhz} MHz": round(rate / (mhz * 1e6))
                                             for mhz in CLOCKS_MHZ}}


def area_view(tech) -> dict:
    """Matrix-multiplication area per MAC under two readings, and what the rest could hold."""
    matmul_um2 = PUBLISHED["area_mm2"] * PUBLISHED["matmul_area_share"] * 1e6
    largest = PUBLIC_ARRAYS[0][0] * PUBLIC_ARRAYS[0][1]
    every = sum(rows * cols for rows, cols in PUBLIC_ARRAYS)
    rest_um2 = PUBLISHED["area_mm2"] * (1 - PUBLISHED["matmul_area_share"]) * 1e6
    return {"table_mac_um2": round(tech.mac_um2),
            "largest_array_macs": largest,
            "um2_per_mac_largest_array_only": round(matmul_um2 / largest),
            "largest_array_over_table": round(matmul_um2 / largest / tech.mac_um2, 1),
            "every_public_array_macs": every,
            "um2_per_mac_every_public_array": round(matmul_um2 / every),
            "every_array_over_table": round(matmul_um2 / every / tech.mac_um2, 1),
            "table_sram_um2_per_byte": round(tech.sram_um2_per_byte, 2),
            "non_matmul_area_as_sram_mib": round(rest_um2 / tech.sram_um2_per_byte / 2**20, 1)}


def preset_view(arch, result) -> dict:
    """The preset's prediction and its array's power at full use, at the published latency."""
    array_mw = arch.rows * arch.cols * arch.clock_mhz * 1e6 * arch.tech.mac_pj * 1e-12 * 1e3
    return {"latency_ms": round(result.latency_ms, 3),
            "latency_over_published": round(result.latency_ms / PUBLISHED["latency_ms"], 3),
            "power_mw": round(result.power_mw, 1),
            "power_over_published": round(result.power_mw / PUBLISHED["power_mw"], 1),
            "area_mm2": round(result.area_mm2, 1),
            "published_over_area": round(PUBLISHED["area_mm2"] / result.area_mm2, 2),
            "matmul_area_share": round(result.matmul_area_share, 3),
            "matmul_power_share": round(result.matmul_power_share, 3),
            "array_mw_at_full_use": round(array_mw, 1),
            "ideal_ms_at_full_use": round(result.macs / (arch.rows * arch.cols
                                                       * arch.clock_mhz * 1e3), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    arch = get_arch("swifttron")
    rows = []
    for length in args.lengths:
        result = simulate(workload_for_spec("roberta-base", seq_len=length), arch)
        rows.append({"seq_len": length, "macs": result.macs,
                     "energy": energy_view(result.macs, arch.tech.mac_pj),
                     "throughput": throughput_view(result.macs),
                     "preset": preset_view(arch, result)})
    report = {"published": PUBLISHED, "preset": arch.notes, "tech": arch.tech.name,
              "area": area_view(arch.tech), "lengths": rows, "commit": recordfile.commit()}
    path = recordfile.record_path(["swifttron-gap"], report["commit"]) if args.record else None
    recordfile.emit(report, path)


if __name__ == "__main__":
    main()

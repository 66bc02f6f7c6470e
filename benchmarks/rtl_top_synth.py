"""Whether the accelerator top (`hw.rtl.top`) fits an iCE40 part, at the smallest configuration
that still runs a layer's program (a 2 x 2 engine, GEMMs of depth 8 and 2 columns at a time,
rows of 8, a 256-word scratchpad): yosys `synth_ice40` in the FPGA harness (`hw.rtl.fpga`),
then nextpnr-ice40 place and route where the counts fit. Per part: LUT4, carry, flip-flop,
SB_MAC16 and block-RAM counts against the part's, and the achieved clock where it routes.
Prints JSON.

Usage: python benchmarks/rtl_top_synth.py [--parts up5k hx8k] [--timeout 1800] [--record]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import recordfile

from mfmaccel.hw.rtl.fpga import PARTS, DeviceFull, SynthesisTimeout, synthesize
from mfmaccel.hw.rtl.top import top_config, top_files

SMALLEST = {"max_tokens": 2, "max_k": 8, "max_row": 8, "rows": 2, "cols": 2, "max_n": 2,
            "head_dim": 8, "spad_words": 256, "dram_words": 1 << 16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per tool run")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    cfg = top_config(**SMALLEST)
    report = {"command": "python benchmarks/rtl_top_synth.py " + " ".join(sys.argv[1:]),
              "commit": recordfile.commit(), "config": SMALLEST,
              "engine": asdict(cfg.engine), "parts": {}}
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for name, text in top_files(cfg).items():
            (Path(tmp) / name).write_text(text)
            files.append(Path(tmp) / name)
        for part in args.parts:
            started = time.perf_counter()
            entry = {"part": asdict(PARTS[part])}
            try:
                result = synthesize(files, "accel_top", part, work=Path(tmp) / part,
                                    timeout_s=args.timeout)
                entry.update(fits=True, **asdict(result))
            except DeviceFull as full:
                entry.update(fits=False, counts=full.counts, message=str(full),
                             over_by={k: round(need / have, 1) if have else None
                                      for k, (need, have) in full.over.items()})
            except SynthesisTimeout as late:
                entry.update(fits=None, timeout=str(late))
            entry["seconds"] = round(time.perf_counter() - started, 1)
            report["parts"][part] = entry
            print(f"{part}: {entry.get('message') or entry.get('fmax_mhz')}", file=sys.stderr)
    parts = ["rtl-top-synth", *args.parts]
    recordfile.emit(report, recordfile.record_path(parts, report["commit"])
                    if args.record else None)


if __name__ == "__main__":
    main()

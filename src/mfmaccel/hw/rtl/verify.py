"""Writing the generated Verilog to a folder, and simulating a unit against its cocotb
testbench (`hw.rtl.testbench`) under Icarus Verilog."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

from mfmaccel.errors import UserInputError
from mfmaccel.fileio import atomic_directory
from mfmaccel.hw.rtl.catalog import UNITS, unit_files
from mfmaccel.hw.rtl.config import RtlConfig

TESTBENCH = "mfmaccel.hw.rtl.testbench"
RUN_SCRIPT = '''"""Simulate every unit here against mfmaccel's integer golden model
(needs iverilog and cocotb)."""
import json
import sys
from pathlib import Path

from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.verify import simulate

here = Path(__file__).parent
cfg = RtlConfig(**json.loads((here / "rtl_config.json").read_text()))
failed = 0
for source in sorted(here.glob("*.v")):
    total, bad = simulate(source, here / "sim_build" / source.stem, cfg=cfg)
    print(f"{source.stem}: {total - bad}/{total} testbench(es) passed")
    failed += bad
sys.exit(1 if failed else 0)
'''


def write_rtl(folder: Path, cfg: RtlConfig) -> list[Path]:
    """Every unit's Verilog, the configuration and `run_tests.py`, written atomically."""
    with atomic_directory(Path(folder)) as tmp:
        for name, generate in UNITS.items():
            (tmp / f"{name}.v").write_text(generate(cfg))
        (tmp / "run_tests.py").write_text(RUN_SCRIPT)
        (tmp / "rtl_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    return sorted(Path(folder).glob("*.v"))


def synthesis_cells(source: Path) -> int:
    """Cells after a generic yosys synthesis of the unit in `source`: an area proxy."""
    if shutil.which("yosys") is None:
        raise UserInputError("yosys is not installed; `make test` installs it")
    reads = "; ".join(f"read_verilog {path}" for path in unit_files(source))
    script = f"{reads}; synth -top {source.stem}; stat"
    result = subprocess.run(["yosys", "-p", script], capture_output=True, text=True,
                            check=False)
    found = re.findall(r"Number of cells:\s+(\d+)", result.stdout)
    if result.returncode or not found:
        raise RuntimeError(f"yosys failed on {source.name}: {result.stderr.strip()[:300]}")
    return int(found[-1])


def simulate(source: Path, build_dir: Path, *, vectors: int = 10_000, seed: int = 0,
             cfg: RtlConfig | None = None, record: Path | None = None) -> tuple[int, int]:
    """(testbenches run, failed) for the unit in `source` (its module name is its stem);
    `cfg` is the configuration it was generated from (default: `RtlConfig()`). With `record`,
    the GEMM bench writes the simulated cycles of every GEMM it ran there (JSON)."""
    if shutil.which("iverilog") is None:
        raise UserInputError("iverilog is not installed; `make test` installs it (Debian's "
                             "iverilog package)")
    from cocotb_tools.runner import get_results, get_runner

    unit = source.stem
    if unit not in UNITS:
        raise UserInputError(f"no testbench for unit '{unit}'; units: {', '.join(UNITS)}")
    if unit.startswith("stream_"):  # file-driven Verilog bench: 10,000s of rows, no cocotb
        from mfmaccel.hw.rtl.stream_verify import simulate_stream

        return simulate_stream(source, build_dir, vectors=vectors, seed=seed,
                               cfg=cfg or RtlConfig())
    runner = get_runner("icarus")
    runner.build(sources=unit_files(source), hdl_toplevel=unit, build_dir=build_dir,
                 timescale=("1ns", "1ps"))
    results = runner.test(hdl_toplevel=unit, test_module=TESTBENCH,
                          testcase=f"{unit}_matches_golden", build_dir=build_dir,
                          test_dir=build_dir, timescale=("1ns", "1ps"),
                          extra_env={"RTL_VECTORS": str(vectors), "RTL_SEED": str(seed),
                                     "RTL_RECORD": str(record or ""),
                                     "RTL_CONFIG": json.dumps(dataclasses.asdict(
                                         cfg or RtlConfig()))})
    return get_results(results)

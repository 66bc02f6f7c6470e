"""The generated Verilog: lint-clean under Verilator, and bit-exact against `hw.intops` in
Icarus simulation (cocotb testbenches in `mfmaccel.hw.rtl.testbench`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.hw.rtl.catalog import UNITS, unit_files
from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.gemm import gemm_cycles
from mfmaccel.hw.rtl.verify import simulate, write_rtl

needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None,
                                  reason="iverilog is not installed (make test installs it)")
needs_verilator = pytest.mark.skipif(shutil.which("verilator") is None,
                                     reason="verilator is not installed (make test installs it)")
CONFIG = RtlConfig(rows=4, cols=4)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("rtl") / "out"
    return {path.stem: path for path in write_rtl(folder, CONFIG)}


@needs_verilator
@pytest.mark.parametrize("unit", sorted(UNITS))
def test_units_are_lint_clean(sources, unit: str) -> None:
    files = [str(path) for path in unit_files(sources[unit])]
    result = subprocess.run(["verilator", "--lint-only", "-Wall", "--top-module", unit, *files],
                            capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@needs_icarus
@pytest.mark.parametrize("unit", sorted(name for name in UNITS if not name.startswith("stream_")))
def test_unit_matches_the_golden_model_bit_for_bit(sources, unit: str, tmp_path) -> None:
    """10,000 vectors each; the streaming units' rows (up to 1,024 values each) are checked in
    tests/hw/rtl/test_stream.py on hundreds of rows and by benchmarks/rtl_stream.py on 10,000."""
    assert simulate(sources[unit], tmp_path / "build", vectors=10_000, cfg=CONFIG) == (1, 0)


@needs_icarus
def test_gelu_flags_results_beyond_int32(tmp_path) -> None:
    """At a fine input scale most int8 inputs overflow i-GELU's int32 output: the unit must
    raise `overflow` exactly where the golden model refuses."""
    fine = RtlConfig(rows=4, cols=4, gelu_input_scale=1 / 4096)
    source = next(p for p in write_rtl(tmp_path / "fine", fine) if p.stem == "igelu")
    assert simulate(source, tmp_path / "build", vectors=256, cfg=fine) == (1, 0)


def test_written_folder_has_every_unit_and_a_runner(sources) -> None:
    folder = next(iter(sources.values())).parent
    assert set(sources) == set(UNITS) and (folder / "run_tests.py").is_file()


def test_impossible_parameters_are_refused() -> None:
    with pytest.raises(UserInputError, match="rows must be a positive integer"):
        RtlConfig(rows=0)
    with pytest.raises(UserInputError, match="cannot hold"):
        RtlConfig(acc_bits=12)
    with pytest.raises(UserInputError, match="raise max_m"):
        RtlConfig(rows=8, max_m=4)


def test_gemm_latency_model_counts_tiles() -> None:
    """The formula the simulation checks edge for edge: partial tiles cost a whole tile."""
    assert gemm_cycles(CONFIG, 4, 4, 10) == 1 + (1 + 10 + 4)
    assert gemm_cycles(CONFIG, 5, 4, 10) == 1 + 2 * (1 + 10 + 4)
    assert gemm_cycles(CONFIG, 16, 16, 64) == 1 + 16 * (1 + 64 + 4)


@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys is not installed")
def test_synthesis_counts_cells_that_grow_with_the_array(tmp_path) -> None:
    from mfmaccel.hw.rtl.verify import synthesis_cells

    small = write_rtl(tmp_path / "small", RtlConfig(rows=2, cols=2))
    large = write_rtl(tmp_path / "large", RtlConfig(rows=2, cols=4))
    cells = {p.parent.name: synthesis_cells(p) for p in small + large if p.stem == "mac_array"}
    assert 0 < cells["small"] < cells["large"]


def test_cli_writes_rtl_and_refuses_bad_sizes(tmp_path) -> None:
    from typer.testing import CliRunner

    from mfmaccel.cli import app

    ok = CliRunner().invoke(app, ["hw", "rtl", "--out", str(tmp_path / "rtl"), "--rows", "2"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "rtl" / "mac_array.v").is_file()
    bad = CliRunner().invoke(app, ["hw", "rtl", "--out", str(tmp_path / "bad"), "--cols", "0"])
    assert bad.exit_code == 2 and "cols must be a positive integer" in bad.output
    assert not (tmp_path / "bad").exists()

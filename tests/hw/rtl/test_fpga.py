"""The iCE40 flow (`hw.rtl.fpga`): the harness reaches every port bit for bit, a generated unit
places and routes with real resource counts and an achieved clock, and a design too large for
the part is refused with a size that fits."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.fpga import Port, harness_verilog, synthesize, synthesize_unit

needs_flow = pytest.mark.skipif(
    shutil.which("yosys") is None or shutil.which("nextpnr-ice40") is None,
    reason="yosys or nextpnr-ice40 is not installed (make toolchain installs them)")
needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None,
                                  reason="iverilog is not installed (make toolchain installs it)")

# Any top file will do: outputs are a fixed function of the inputs, so the harness's wiring
# can be checked bit for bit.
SWIZZLE = """module swizzle (input wire clk, input wire [2:0] a, input wire b, input wire [3:0] c,
                output wire [3:0] y, output wire [2:0] z);
    reg [3:0] held;
    always @(posedge clk) held <= ~c;
    assign y = held ^ {b, a};
    assign z = a & {3{b}};
endmodule
"""
SWIZZLE_PORTS = [Port("clk", False, 1), Port("a", False, 3), Port("b", False, 1),
                 Port("c", False, 4), Port("y", True, 4), Port("z", True, 3)]


def _bench(word: int) -> str:
    """Shift `word` ({c, b, a}) in, MSB first; one more edge (`held` takes ~c, the chain
    shifts once more); capture; shift the outputs out."""
    bits = [(word >> i) & 1 for i in reversed(range(8))]
    shifts = "\n".join(f"        sin = {bit}; @(posedge clk); #1;" for bit in bits)
    return f"""`timescale 1ns/1ps
module bench;
    reg clk = 0, sin = 0, capture = 0;
    wire sout;
    integer i;
    fpga_harness h (.clk(clk), .sin(sin), .capture(capture), .sout(sout));
    always #5 clk = ~clk;
    initial begin
{shifts}
        @(posedge clk); #1;
        capture = 1; @(posedge clk); #1; capture = 0;
        for (i = 0; i < 7; i = i + 1) begin $write("%0d", sout); @(posedge clk); #1; end
        $display("");
        $finish;
    end
endmodule
"""


@needs_icarus
@pytest.mark.parametrize("word", [0b0110_1_101, 0b1001_0_011, 0b1110_1_010])
def test_harness_reaches_every_port_bit(tmp_path: Path, word: int) -> None:
    """Simulated: bits shifted in arrive at the right input bits, the clock reaches the
    module's register, and the outputs shifted out (LSB of the first output first) are the
    module's function of them."""
    (tmp_path / "swizzle.v").write_text(SWIZZLE)
    (tmp_path / "harness.v").write_text(harness_verilog("swizzle", SWIZZLE_PORTS))
    (tmp_path / "bench.v").write_text(_bench(word))
    subprocess.run(["iverilog", "-o", str(tmp_path / "sim"), *(str(tmp_path / f) for f in
                    ("swizzle.v", "harness.v", "bench.v"))], check=True)
    out = subprocess.run(["vvp", "-n", str(tmp_path / "sim")], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    held = ~(word >> 4) & 0xF  # taken at the edge after the 8th bit
    seen = ((word << 1) | (word & 1)) & 0xFF  # the chain one shift later, at capture
    a, b = seen & 0b111, (seen >> 3) & 1
    y, z = held ^ ((b << 3) | a), a & (0b111 * b)
    outputs = (z << 4) | y
    assert out == "".join(str((outputs >> i) & 1) for i in range(7))


@needs_flow
def test_any_top_file_places_and_routes(tmp_path: Path) -> None:
    (tmp_path / "swizzle.v").write_text(SWIZZLE)
    result = synthesize([tmp_path / "swizzle.v"], "swizzle", "hx8k", freq_mhz=50,
                        work=tmp_path / "work")
    assert (result.harness_in_bits, result.harness_out_bits) == (8, 7)
    assert result.dff == 8 + 7 + 4  # the harness's shift registers and the module's `held`
    assert result.cells["SB_LUT4"] == result.lut4 > 0
    assert result.dsp == 0 and 0 < result.logic_cells < result.logic_cells_available
    assert result.fmax_mhz > 50 and result.timing_met  # a few LUTs between flip-flops
    assert (tmp_path / "work" / "report.json").is_file()


@needs_flow
def test_requant_on_up5k_uses_dsps_for_its_wide_product(tmp_path: Path) -> None:
    """The 32 x 31-bit dyadic multiply takes four 16 x 16 SB_MAC16 blocks; its rounding and
    saturation stay in LUTs; routed, it runs at a real, positive clock."""
    result = synthesize_unit("requant", RtlConfig(), "up5k", work=tmp_path)
    assert result.dsp == 4 and result.bram == 0
    assert result.harness_in_bits == 32 + 31 + 6 and result.harness_out_bits == 8
    assert result.dff == result.harness_in_bits + result.harness_out_bits  # combinational unit
    assert 0 < result.lut4 <= result.logic_cells <= result.logic_cells_available
    assert 0 < result.fmax_mhz < 200
    assert result.cells["SB_MAC16"] == 4 and result.carry > 0


@needs_flow
def test_a_unit_too_large_is_refused_with_a_size_that_fits() -> None:
    """Nine 8 x 8 MACs on DSPs need 9 SB_MAC16; the up5k has 8: two rows of three fit."""
    with pytest.raises(UserInputError) as refused:
        synthesize_unit("mac_array", RtlConfig(rows=3, cols=3), "up5k", dsp_min_bits=2)
    message = str(refused.value)
    assert "9 SB_MAC16 (has 8)" in message and "rows=3, cols=3" in message
    assert "rows=2 fits" in message and "6 SB_MAC16" in message


def test_unknown_part_and_bad_knobs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="unknown FPGA part 'ecp5'.*up5k"):
        synthesize([tmp_path / "x.v"], "x", "ecp5")
    with pytest.raises(UserInputError, match="dsp_min_bits"):
        synthesize([tmp_path / "x.v"], "x", "up5k", dsp_min_bits=-1)
    with pytest.raises(UserInputError, match="unknown unit 'fft'"):
        synthesize_unit("fft", RtlConfig(), "up5k")


@needs_flow
def test_cli_reports_the_clock_and_refuses_an_unknown_part(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mfmaccel.cli import app

    out = tmp_path / "requant.json"
    ok = CliRunner().invoke(app, ["hw", "synth", "--unit", "requant", "--fpga", "up5k",
                                  "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "fmax_mhz" in ok.output and '"dsp": 4' in out.read_text()
    bad = CliRunner().invoke(app, ["hw", "synth", "--unit", "requant", "--fpga", "ecp5"])
    assert bad.exit_code == 2 and "unknown FPGA part 'ecp5'" in bad.output

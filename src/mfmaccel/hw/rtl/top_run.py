"""Running a compiled program (`hw.rtl.top_compile.Compiled`) on the accelerator top in a
simulator: the testbench holds off-chip memory (loaded from the image with `$readmemh`),
starts the top at the program, waits for `done`, and writes back the top's cycle count, its
fault flag and the output regions. Icarus Verilog by default, or Verilator: built once per
folder and rerun on each program's image, and far faster on a whole layer
(`benchmarks/rtl_top.py` records both).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mfmaccel.hw.rtl.stream_common import bits_for
from mfmaccel.hw.rtl.testbench_stream import require_simulator, run_tool
from mfmaccel.hw.rtl.top import TopConfig, top_files
from mfmaccel.hw.rtl.top_compile import Compiled

CYCLE_LIMIT = 1 << 30


@dataclass
class TopRun:
    cycles: int  # the top's counter: edges from the one taking start to the one raising done
    outputs: dict[str, torch.Tensor]  # by name, as the compiled program's outputs


def _bench(cfg: TopConfig, compiled: Compiled) -> str:
    daw = bits_for(cfg.dram_words - 1)
    dumps = "\n".join(
        f'        $writememh("out_{name}.hex", dram, {region.base}, '
        f'{region.base + region.size - 1});'
        for name, (region, _) in compiled.outputs.items())
    return f"""`timescale 1ns/1ps
module accel_tb;
    reg clk = 1'b0, rst = 1'b1, start = 1'b0;
    wire busy, done, fault, mem_re, mem_we;
    wire [31:0] cycles, mem_wdata;
    wire [{daw - 1}:0] mem_addr;
    reg [31:0] mem_rdata;
    reg [31:0] dram [0:{cfg.dram_words - 1}];
    integer f, waited;
    accel_top dut (
        .clk(clk), .rst(rst), .start(start), .program_base({daw}'d{compiled.program_base}),
        .busy(busy), .done(done), .fault(fault), .cycles(cycles), .mem_re(mem_re),
        .mem_we(mem_we), .mem_addr(mem_addr), .mem_wdata(mem_wdata), .mem_rdata(mem_rdata)
    );
    always #5 clk = ~clk;
    always @(posedge clk) begin  // off-chip memory: a read's data the cycle after
        if (mem_re) mem_rdata <= dram[mem_addr];
        if (mem_we) dram[mem_addr] <= mem_wdata;
    end
    initial begin
        $readmemh("dram.hex", dram);
        @(posedge clk); rst <= 1'b0;
        @(posedge clk); start <= 1'b1;
        @(posedge clk); start <= 1'b0;
        waited = 0;
        while (!done && waited < {CYCLE_LIMIT}) begin @(posedge clk); waited = waited + 1; end
        f = $fopen("result.txt", "w");
        $fdisplay(f, "%0d %0d %0d", cycles, fault, done);
        $fclose(f);
{dumps}
        $finish;
    end
endmodule
"""


def _image_hex(compiled: Compiled) -> str:
    lines = []
    for base, words in sorted(compiled.image.items()):
        lines.append(f"@{base:x}")
        lines.extend(f"{w & 0xFFFF_FFFF:08x}" for w in words)
    return "\n".join(lines) + "\n"


def _signed(word: str) -> int:
    value = int(word, 16)
    return value - (1 << 32) if value >> 31 else value


def read_memh(path: Path) -> list[str]:
    """The words of a `$writememh` dump (its `//` comment and `@` address lines skipped)."""
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith(("//", "@"))]


def run_top(cfg: TopConfig, compiled: Compiled, work: Path, *,
            simulator: str = "icarus") -> TopRun:
    """Simulate `compiled` on the top in `work` (a folder this call owns) and read back its
    cycles and outputs; a program that faults or never ends is an error."""
    require_simulator(simulator)
    work.mkdir(parents=True, exist_ok=True)
    files = top_files(cfg) | {"accel_tb.v": _bench(cfg, compiled)}
    unchanged = all((work / name).is_file() and (work / name).read_text() == text
                    for name, text in files.items())
    for name, text in files.items():
        (work / name).write_text(text)
    (work / "dram.hex").write_text(_image_hex(compiled))
    (work / "result.txt").unlink(missing_ok=True)
    sources = list(files)
    if simulator == "icarus":
        run_tool(["iverilog", "-g2005", "-o", "top.vvp", "-s", "accel_tb", *sources], work,
                 "iverilog")
        run_tool(["vvp", "-n", "top.vvp"], work, "vvp")
    else:  # a build of the same sources in `work` is reused: the program is in dram.hex
        if not (unchanged and (work / "obj" / "simv").is_file()):
            run_tool(["verilator", "--binary", "--timing", "-Wno-fatal", "-Wno-lint",
                      "-Wno-style", "--top-module", "accel_tb", "--Mdir", "obj", "-o", "simv",
                      "-j", "2", *sources], work, "verilator")
        run_tool([str(work / "obj" / "simv")], work, "the verilated top")
    cycles, fault, done = (int(x) for x in (work / "result.txt").read_text().split())
    if fault or not done:
        raise RuntimeError("the top " + ("faulted (an unknown opcode or kind)" if fault
                                         else f"did not finish in {CYCLE_LIMIT} cycles"))
    outputs = {}
    for name, (region, shape) in compiled.outputs.items():
        words = read_memh(work / f"out_{name}.hex")
        outputs[name] = torch.tensor([_signed(w) for w in words[:region.size]]).view(shape)
    return TopRun(cycles, outputs)

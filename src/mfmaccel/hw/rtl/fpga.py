"""Synthesis for a real part: yosys `synth_ice40` and nextpnr-ice40 place and route a generated
unit (or any Verilog top) on a Lattice iCE40, giving LUT4 / carry / flip-flop / DSP / block-RAM
counts and the clock the routed design achieves, where `verify.synthesis_cells` gives only
generic gates.

A unit's ports far outnumber a small FPGA's pins (the GEMM engine has ~140 port bits), so the
unit is placed inside a harness: every input bit comes from a shift register fed by one pin,
every output bit is captured into a shift register read out through another. The unit's logic then
sits between flip-flops, so the achieved clock is the unit's own register-to-register speed
(combinational units included); the harness adds one flip-flop per port bit and about one LUT
per output bit, reported beside the counts.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from mfmaccel.errors import UserInputError
from mfmaccel.hw.rtl.catalog import UNITS, unit_files
from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.records import Record

HARNESS = "fpga_harness"
# Multipliers with both operands at least this wide go to SB_MAC16 blocks, the rest to LUTs
# (0: all to LUTs). The requantizer's 32 x 31-bit product is where DSPs save most (on the up5k
# the unit takes 3,705 LUT4s without, 714 and 4 DSPs with), so the 8 x 8 MACs stay in LUTs.
DSP_MIN_BITS = 9
FPGA_MAX_K = 16  # `fpga_config`'s K: the GEMM engine's buffers hold rows x 16 and 16 x cols
# The knobs that size each unit, in the order a refusal tries shrinking them.
SIZE_KNOBS = {"gemm": ("max_k", "cols", "rows", "max_m", "max_n"), "mac_array": ("rows", "cols"),
              "softmax": ("softmax_len",), "layernorm": ("norm_len",),
              "token_shift": ("token_len",)}


@dataclass(frozen=True)
class FpgaPart:
    name: str
    flag: str  # nextpnr-ice40's device option
    package: str
    luts: int  # logic cells: one LUT4 + one flip-flop each
    dsps: int  # SB_MAC16
    brams: int  # SB_RAM40_4K (4 Kbit)


PARTS = {part.name: part for part in (
    FpgaPart("up5k", "--up5k", "sg48", luts=5280, dsps=8, brams=30),
    FpgaPart("hx8k", "--hx8k", "ct256", luts=7680, dsps=0, brams=32),
)}


@dataclass
class FpgaSynthesis(Record):
    """One design placed and routed on one part."""

    top: str
    part: str
    lut4: int
    carry: int
    dff: int
    dsp: int  # SB_MAC16
    bram: int  # SB_RAM40_4K
    logic_cells: int  # nextpnr's ICESTORM_LC used (LUT4 + flip-flop pairs)
    logic_cells_available: int
    fmax_mhz: float  # achieved, after routing
    target_mhz: float
    harness_in_bits: int  # flip-flops the harness adds: one per port bit
    harness_out_bits: int  # ... and about one LUT4 per output bit
    dsp_min_bits: int
    synth_seconds: float
    pnr_seconds: float
    config: dict = field(default_factory=dict)  # a generated unit's size knobs
    cells: dict[str, int] = field(default_factory=dict)  # every cell type after synthesis

    @property
    def timing_met(self) -> bool:
        return self.fmax_mhz >= self.target_mhz


@dataclass(frozen=True)
class Port:
    name: str
    output: bool
    width: int


def require_tools() -> None:
    missing = [tool for tool in ("yosys", "nextpnr-ice40") if shutil.which(tool) is None]
    if missing:
        raise UserInputError(f"{', '.join(missing)} not installed; `make toolchain` installs "
                             f"them (apt-get install yosys nextpnr-ice40)")


def get_part(name: str) -> FpgaPart:
    if name not in PARTS:
        raise UserInputError(f"unknown FPGA part '{name}'; parts: {', '.join(PARTS)}")
    return PARTS[name]


class SynthesisTimeout(RuntimeError):
    """A tool ran past the time it was given (and was stopped)."""


def _run(command: list[str], *, timeout_s: float | None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a tool run in a process group of its own, so that a
    timeout or an interrupt stops it and whatever it started."""
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as child:
        try:
            out, err = child.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            raise SynthesisTimeout(f"{command[0]} stopped after {timeout_s:g} s") from None
        except BaseException:
            os.killpg(child.pid, signal.SIGKILL)
            raise
    return child.returncode, out, err


def _yosys(script: str, log: Path, timeout_s: float | None = None) -> str:
    code, _, err = _run(["yosys", "-q", "-l", str(log), "-p", script], timeout_s=timeout_s)
    if code:
        tail = (err or log.read_text())[-400:].strip()
        raise RuntimeError(f"yosys failed (log {log}): {tail}")
    return log.read_text()


def read_ports(files: list[Path], top: str, work: Path) -> list[Port]:
    """The top module's ports, as yosys elaborates them."""
    reads = "; ".join(f"read_verilog {path}" for path in files)
    text = _yosys(f"{reads}; hierarchy -top {top}; portlist {top}", work / "ports.log")
    found = re.findall(r"^(input|output|inout) \[(\d+):(\d+)\] (\S+)$", text, re.M)
    if any(kind == "inout" for kind, *_ in found):
        raise UserInputError(f"module {top} has an inout port; the FPGA harness drives inputs "
                             f"and reads outputs only")
    ports = [Port(name, kind == "output", int(high) - int(low) + 1)
             for kind, high, low, name in found]
    if not any(p.output for p in ports):
        raise UserInputError(f"module {top} has no outputs: nothing to synthesize")
    return ports


def harness_verilog(top: str, ports: list[Port]) -> str:
    """A wrapper whose four pins (clk, sin, capture, sout) reach every port of `top` through
    shift registers; an input named clk is wired to the clock."""
    inputs = [p for p in ports if not p.output and p.name != "clk"]
    outputs = [p for p in ports if p.output]
    in_w, out_w = sum(p.width for p in inputs) or 1, sum(p.width for p in outputs)
    shift_in = "sin" if in_w == 1 else f"{{in_sr[{in_w - 2}:0], sin}}"
    shift_out = "1'b0" if out_w == 1 else f"{{1'b0, out_sr[{out_w - 1}:1]}}"
    links, at = [], {False: 0, True: 0}
    for port in ports:
        if port.name == "clk" and not port.output:
            links.append(".clk(clk)")
            continue
        bus = "out_bus" if port.output else "in_sr"
        links.append(f".{port.name}({bus}[{at[port.output] + port.width - 1}:"
                     f"{at[port.output]}])")
        at[port.output] += port.width
    return f"""// {HARNESS}: every port of {top} behind shift registers (mfmaccel.hw.rtl.fpga)
module {HARNESS} (input wire clk, input wire sin, input wire capture, output wire sout);
    reg [{in_w - 1}:0] in_sr;
    reg [{out_w - 1}:0] out_sr;
    wire [{out_w - 1}:0] out_bus;
    always @(posedge clk) in_sr <= {shift_in};
    always @(posedge clk) out_sr <= capture ? out_bus : {shift_out};
    assign sout = out_sr[0];
    {top} dut ({", ".join(links)});
endmodule
"""


def _dsp_premap(min_bits: int) -> str:
    """synth_ice40 -dsp's multiplier mapping, run first with a minimum operand width, so only
    the wide multipliers take SB_MAC16 blocks (synth_ice40 itself maps every one of 2+ bits)."""
    return ("proc; flatten; opt_expr; opt_clean; opt -nodffe -nosdff; wreduce; peepopt; "
            "opt_clean; wreduce t:$mul; techmap -map +/mul2dsp.v -map +/ice40/dsp_map.v "
            "-D DSP_A_MAXWIDTH=16 -D DSP_B_MAXWIDTH=16 "
            f"-D DSP_A_MINWIDTH={min_bits} -D DSP_B_MINWIDTH={min_bits} "
            "-D DSP_Y_MINWIDTH=11 -D DSP_NAME=$__MUL16X16; select a:mul2dsp; "
            "setattr -unset mul2dsp; opt_expr -fine; wreduce; select -clear; "
            "chtype -set $mul t:$__soft_mul")


def synthesize_netlist(files: list[Path], top: str, part: FpgaPart, *, dsp_min_bits: int,
                       work: Path, timeout_s: float | None = None
                       ) -> tuple[Counter, list[Port]]:
    """Cell counts of `top` (in its harness) after synth_ice40; the netlist is
    work/netlist.json."""
    ports = read_ports(files, top, work)
    harness = work / f"{HARNESS}.v"
    harness.write_text(harness_verilog(top, ports))
    reads = "; ".join(f"read_verilog {path}" for path in [*files, harness])
    premap = f"{_dsp_premap(dsp_min_bits)}; " if dsp_min_bits and part.dsps else ""
    _yosys(f"{reads}; hierarchy -top {HARNESS}; {premap}"
           f"synth_ice40 -top {HARNESS} -json {work / 'netlist.json'}", work / "synth.log",
           timeout_s)
    netlist = json.loads((work / "netlist.json").read_text())
    cells = Counter(cell["type"] for cell in netlist["modules"][HARNESS]["cells"].values())
    return cells, ports


RESOURCES = {"lut4": "LUT4", "dff": "flip-flops", "dsp": "SB_MAC16", "bram": "SB_RAM40_4K"}


def resource_counts(cells: Counter) -> dict[str, int]:
    return {"lut4": cells["SB_LUT4"], "carry": cells["SB_CARRY"],
            "dff": sum(n for kind, n in cells.items() if kind.startswith("SB_DFF")),
            "dsp": cells["SB_MAC16"], "bram": cells["SB_RAM40_4K"]}


def overflow(counts: dict[str, int], part: FpgaPart) -> dict[str, tuple[int, int]]:
    """Resources the design needs beyond the part: name -> (needed, available). Each logic
    cell holds one LUT4 and one flip-flop, so either count alone must fit."""
    limits = {"lut4": part.luts, "dff": part.luts, "dsp": part.dsps, "bram": part.brams}
    return {name: (counts[name], limit) for name, limit in limits.items()
            if counts[name] > limit}


class DeviceFull(UserInputError):
    """The design needs more of a resource than the part has."""

    def __init__(self, top: str, part: FpgaPart, over: dict[str, tuple[int, int]],
                 counts: dict[str, int] | None = None) -> None:
        self.over = over
        self.counts = counts or {}  # every resource's count after synthesis
        needs = ", ".join(f"{need:,} {RESOURCES[name]} (has {have:,})"
                          for name, (need, have) in over.items())
        super().__init__(f"{top} does not fit the {part.name}: needs {needs}")


def place_and_route(part: FpgaPart, *, freq_mhz: float, work: Path, seed: int = 1,
                    timeout_s: float | None = None) -> dict:
    """nextpnr-ice40 on work/netlist.json: its JSON report (utilisation, achieved fmax)."""
    report = work / "report.json"
    command = ["nextpnr-ice40", part.flag, "--package", part.package, "--json",
               str(work / "netlist.json"), "--pcf-allow-unconstrained", "--freq", str(freq_mhz),
               "--timing-allow-fail", "--seed", str(seed), "--report", str(report)]
    code, out, err = _run(command, timeout_s=timeout_s)
    (work / "pnr.log").write_text(out + err)
    if code or not report.is_file():
        errors = [line for line in err.splitlines() if "ERROR" in line]
        raise RuntimeError(f"nextpnr-ice40 failed (log {work / 'pnr.log'}): "
                           f"{' '.join(errors)[:400] or err[-400:]}")
    return json.loads(report.read_text())


def synthesize(files: list[Path], top: str, part: str = "up5k", *, freq_mhz: float = 100,
               dsp_min_bits: int = DSP_MIN_BITS, work: Path | None = None,
               timeout_s: float | None = None) -> FpgaSynthesis:
    """Any Verilog design whose top module is `top`, through the whole iCE40 flow; the
    harness, netlist, logs and nextpnr report stay in `work` (default: a temporary folder).
    Each tool gets `timeout_s` (default: no limit), past which `SynthesisTimeout`."""
    fpga = get_part(part)
    if not freq_mhz > 0:
        raise UserInputError(f"freq_mhz (--freq) must be a positive clock in MHz, got {freq_mhz}")
    if dsp_min_bits < 0:
        raise UserInputError(f"dsp_min_bits must be 0 (no DSPs) or an operand width such as "
                             f"{DSP_MIN_BITS}, got {dsp_min_bits}")
    require_tools()
    if work is None:
        with tempfile.TemporaryDirectory(prefix="mfmaccel-fpga-") as tmp:
            return synthesize(files, top, part, freq_mhz=freq_mhz, dsp_min_bits=dsp_min_bits,
                              work=Path(tmp), timeout_s=timeout_s)
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cells, ports = synthesize_netlist(files, top, fpga, dsp_min_bits=dsp_min_bits, work=work,
                                      timeout_s=timeout_s)
    synth_seconds = time.perf_counter() - start
    counts = resource_counts(cells)
    if over := overflow(counts, fpga):
        raise DeviceFull(top, fpga, over, counts)
    start = time.perf_counter()
    report = place_and_route(fpga, freq_mhz=freq_mhz, work=work, timeout_s=timeout_s)
    used = report["utilization"]["ICESTORM_LC"]
    fmax = next(iter(report["fmax"].values()))["achieved"]
    return FpgaSynthesis(
        top=top, part=fpga.name, **counts, logic_cells=used["used"],
        logic_cells_available=used["available"], fmax_mhz=round(fmax, 2), target_mhz=freq_mhz,
        harness_in_bits=sum(p.width for p in ports if not p.output and p.name != "clk"),
        harness_out_bits=sum(p.width for p in ports if p.output), dsp_min_bits=dsp_min_bits,
        synth_seconds=round(synth_seconds, 1),
        pnr_seconds=round(time.perf_counter() - start, 1), cells=dict(sorted(cells.items())))


def fpga_config(*, rows: int = 2, cols: int = 2, max_k: int = FPGA_MAX_K, lanes: int = 2
                ) -> RtlConfig:
    """A configuration sized for a small FPGA. The GEMM engine's buffers are register files
    with a read port per array lane (no block RAM can serve them), so they hold one tile of A
    and B (max_m = rows, max_n = cols) with K up to `max_k`; `lanes` sizes the softmax,
    layernorm and token_shift rows."""
    return RtlConfig(rows=rows, cols=cols, max_m=rows, max_n=cols, max_k=max_k,
                     softmax_len=lanes, norm_len=lanes, token_len=lanes)


def write_unit(unit: str, cfg: RtlConfig, folder: Path) -> list[Path]:
    """The unit's Verilog and that of the units it instantiates, in `folder`."""
    if unit not in UNITS:
        raise UserInputError(f"unknown unit '{unit}'; units: {', '.join(UNITS)}")
    source = folder / f"{unit}.v"
    files = unit_files(source)
    for path in files:
        path.write_text(UNITS[path.stem](cfg))
    return files


def synthesize_unit(unit: str, cfg: RtlConfig, part: str = "up5k", *, freq_mhz: float = 100,
                    dsp_min_bits: int = DSP_MIN_BITS, work: Path | None = None,
                    timeout_s: float | None = None) -> FpgaSynthesis:
    """A generated unit at `cfg` through the iCE40 flow. One that does not fit is refused
    with the size knob and a value that does fit after synthesis (found by synthesizing
    smaller configurations, one knob at a time)."""
    with tempfile.TemporaryDirectory(prefix="mfmaccel-fpga-") as tmp:
        folder = work or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        files = write_unit(unit, cfg, folder)
        try:
            result = synthesize(files, unit, part, freq_mhz=freq_mhz,
                                dsp_min_bits=dsp_min_bits, work=folder, timeout_s=timeout_s)
        except DeviceFull as full:
            fits = _what_fits(unit, cfg, get_part(part), full, dsp_min_bits, timeout_s)
            raise UserInputError(f"{full} at {_describe(unit, cfg)}; {fits}") from None
    result.config = {name: getattr(cfg, name) for name in SIZE_KNOBS.get(unit, ())}
    return result


def _describe(unit: str, cfg: RtlConfig) -> str:
    return ", ".join(f"{k}={getattr(cfg, k)}" for k in SIZE_KNOBS.get(unit, ())) or "its one size"


def _alternatives(unit: str, cfg: RtlConfig, full: DeviceFull, dsp_min_bits: int):
    """(what changed, config, dsp_min_bits) to try: each size knob shrunk alone, starting where
    the overflow would vanish if the resource scaled with the knob; then no DSPs."""
    ratio = max(need / max(have, 1) for need, have in full.over.values())
    for knob in SIZE_KNOBS.get(unit, ()):
        value = getattr(cfg, knob)
        trial = max(1, min(value - 1, math.floor(value / ratio)))
        while 1 <= trial < value:
            try:
                smaller = replace(cfg, **{knob: trial})
            except UserInputError:  # e.g. max_m below rows
                break
            yield f"{knob}={trial}", smaller, dsp_min_bits
            trial //= 2
    if "dsp" in full.over and dsp_min_bits:
        yield "dsp_min_bits=0 (every multiplier from LUTs)", cfg, 0


def _what_fits(unit: str, cfg: RtlConfig, part: FpgaPart, full: DeviceFull,
               dsp_min_bits: int, timeout_s: float | None) -> str:
    """'cols=2 fits after synthesis (...)', checked by synthesizing it; else what to try."""
    for change, smaller, dsp in _alternatives(unit, cfg, full, dsp_min_bits):
        with tempfile.TemporaryDirectory(prefix="mfmaccel-fpga-") as tmp:
            try:
                cells, _ = synthesize_netlist(write_unit(unit, smaller, Path(tmp)), unit, part,
                                              dsp_min_bits=dsp, work=Path(tmp),
                                              timeout_s=timeout_s)
            except SynthesisTimeout:
                continue
        counts = resource_counts(cells)
        if not overflow(counts, part):
            return (f"{change} fits after synthesis ({counts['lut4']:,} LUT4, "
                    f"{counts['dff']:,} flip-flops, {counts['dsp']} SB_MAC16)")
    others = " or ".join(p for p in PARTS if p != part.name)
    knobs = ", ".join(SIZE_KNOBS.get(unit, ())) or "none"
    return f"no single change fits (size knobs: {knobs}); shrink several, or try {others}"

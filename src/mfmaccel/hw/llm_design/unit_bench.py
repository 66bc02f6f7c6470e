"""A plain Verilog bench that drives a table of input vectors into TopModule and compares every
output with the golden value computed in Python, sample by sample.

Why a table and not a reference instance: our units' golden model is `hw.intops`, so the
expected outputs are computed there and written into the bench; the design is judged against
the integer algorithm itself. The bench speaks VerilogEval's dialect (module `tb`, the per-
output "Hint:" lines, the "Mismatches: N in M samples" report) so the sandboxed `simulate`, the
per-run token and the feedback treat it as any other task. It also prints the first mismatching
samples with their inputs, expected and actual outputs: the loop's feedback quotes them.
"""

from __future__ import annotations

import dataclasses

from mfmaccel.hw.llm_design.task import Port
from mfmaccel.hw.llm_design.verilog_eval import REPORT_LINE
from mfmaccel.hw.rtl.signals import pack

SHOWN_SAMPLES = 2  # mismatching samples printed with their values
_DECIMAL_LANES = 8  # ports of up to this many lanes print lane by lane, wider ones in hex


@dataclasses.dataclass(frozen=True)
class UnitPort:
    """A port of a unit task: `lanes` values of width // lanes bits each, packed lane 0 at
    the low bits; `signed` says how to read (and print) each lane."""

    name: str
    direction: str
    width: int
    signed: bool = False
    lanes: int = 1

    @property
    def port(self) -> Port:
        return Port(self.name, self.direction, self.width, f"[{self.width - 1}:0]"
                    if self.width > 1 else "")

    def pack(self, value: int | list[int]) -> int:
        """The port's bits from one value or a list of lane values (two's complement)."""
        values = value if isinstance(value, list) else [value]
        if len(values) != self.lanes:
            raise ValueError(f"port {self.name}: {len(values)} values for {self.lanes} lanes")
        return pack(values, self.width // self.lanes)


Sample = tuple[dict[str, int | list[int]], dict[str, int | list[int]]]  # (inputs, expected)


def vector_bench(ports: list[UnitPort], samples: list[Sample], *, clock: str | None = None) -> str:
    """The bench's Verilog. Combinational (`clock=None`): inputs applied, outputs compared 1 time
    unit later, 10 per sample. Clocked: inputs applied while `clock` is low, a rising edge 5
    later, outputs compared 1 after it (the registers' new values)."""
    inputs = [p for p in ports if p.direction == "input" and p.name != clock]
    outputs = [p for p in ports if p.direction == "output"]
    in_width, out_width = sum(p.width for p in inputs), sum(p.width for p in outputs)
    lines = ["`timescale 1 ps / 1 ps", "module tb();",
             f"    localparam SAMPLES = {len(samples)};",
             f"    reg [{in_width - 1}:0] stim [0:SAMPLES-1];",
             f"    reg [{out_width - 1}:0] want [0:SAMPLES-1];",
             f"    reg [{out_width - 1}:0] expected;",
             "    integer i, errors, shown;", "    reg bad;"]
    if clock:
        lines.append(f"    reg {clock};")
    lines += [f"    reg {_range(p)}{p.name};" for p in inputs]
    lines += [f"    wire {_range(p)}{p.name}_dut;" for p in outputs]
    lines += [f"    integer errors_{p.name}, first_{p.name};" for p in outputs]
    connections = [f".{clock}({clock})"] if clock else []
    connections += [f".{p.name}({p.name})" for p in inputs]
    connections += [f".{p.name}({p.name}_dut)" for p in outputs]
    lines.append(f"    TopModule top_module1 ({', '.join(connections)});")
    lines += ["    initial begin"]
    lines += _tables(inputs, outputs, samples)
    lines += ["        errors = 0; shown = 0;"]
    lines += [f"        errors_{p.name} = 0; first_{p.name} = 0;" for p in outputs]
    if clock:
        lines.append(f"        {clock} = 1'b0;")
    lines += ["        for (i = 0; i < SAMPLES; i = i + 1) begin",
              f"            {{{', '.join(p.name for p in inputs)}}} = stim[i];",
              "            expected = want[i];"]
    edge = [f"            #5 {clock} = 1'b1;"] if clock else []
    lines += [*edge, "            #1;"]
    lines += ["            bad = 1'b0;"]
    lines += _checks(outputs)
    lines += ["            if (bad) begin", "                errors = errors + 1;",
              f"                if (shown < {SHOWN_SAMPLES}) begin",
              f"                    {_sample_line(inputs, outputs)}",
              "                    shown = shown + 1;", "                end", "            end"]
    lines += [f"            #4 {clock} = 1'b0;"] if clock else ["            #9;"]
    lines += ["        end"]
    lines += [f'        $display("Hint: Output \'%s\' has %0d mismatches. First mismatch '
              f'occurred at time %0d.", "{p.name}", errors_{p.name}, first_{p.name});'
              for p in outputs]
    lines += [f"        {REPORT_LINE}, errors, SAMPLES);", "        $finish;", "    end",
              "endmodule", ""]
    return "\n".join(lines)


def _range(port: UnitPort) -> str:
    return f"[{port.width - 1}:0] " if port.width > 1 else ""


def _tables(inputs: list[UnitPort], outputs: list[UnitPort], samples: list[Sample]) -> list[str]:
    """One assignment per sample and table: the inputs concatenated (the last input at the
    low bits), the expected outputs likewise."""
    in_width, out_width = sum(p.width for p in inputs), sum(p.width for p in outputs)
    lines = []
    for index, (given, wanted) in enumerate(samples):
        lines.append(f"        stim[{index}] = {in_width}'h{_concat(inputs, given):x}; "
                     f"want[{index}] = {out_width}'h{_concat(outputs, wanted):x};")
    return lines


def _concat(ports: list[UnitPort], values: dict) -> int:
    """The ports' bits concatenated as Verilog's {first, ..., last} would be (last lowest)."""
    word = 0
    for port in ports:
        word = (word << port.width) | port.pack(values[port.name])
    return word


def _checks(outputs: list[UnitPort]) -> list[str]:
    """Per output: compare its slice of `expected` (4-state: x or z mismatch), count it."""
    lines, offsets = [], _offsets(outputs)
    for port in reversed(outputs):
        low = offsets[port.name]
        wanted = f"expected[{low + port.width - 1}:{low}]"
        lines += [f"            if ({port.name}_dut !== {wanted}) begin",
                  f"                if (errors_{port.name} == 0) first_{port.name} = $time;",
                  f"                errors_{port.name} = errors_{port.name} + 1;",
                  "                bad = 1'b1;", "            end"]
    return lines


def _offsets(outputs: list[UnitPort]) -> dict[str, int]:
    """Each output's lowest bit in `expected` (the last output lowest, as `_concat` packs)."""
    offsets, low = {}, 0
    for port in reversed(outputs):
        offsets[port.name] = low
        low += port.width
    return offsets


def _sample_line(inputs: list[UnitPort], outputs: list[UnitPort]) -> str:
    """$display of one mismatching sample: time, inputs, expected and actual outputs."""
    formats, arguments = [], []
    for port in inputs:
        text, args = _value(port, port.name)
        formats.append(f"{port.name}={text}")
        arguments += args
    given = " ".join(formats)
    formats, offsets = [], _offsets(outputs)
    for port in outputs:
        want_text, want_args = _value(port, "expected", offsets[port.name])
        got_text, got_args = _value(port, f"{port.name}_dut")
        formats.append(f"{port.name} expected {want_text}, got {got_text}")
        arguments += want_args + got_args
    return (f'$display("Hint: Sample at time %0d: inputs {given}; {"; ".join(formats)}", '
            f'$time, {", ".join(arguments)});')


def _value(port: UnitPort, vector: str, offset: int | None = None) -> tuple[str, list[str]]:
    """A format and its arguments printing the port's bits (at `offset` in `vector`; the
    whole of `vector` when None) lane by lane in decimal, or in hex for ports of many lanes."""
    if offset is None and port.lanes == 1:
        return "%0d", [f"$signed({vector})" if port.signed else vector]
    offset = offset or 0
    if port.lanes > _DECIMAL_LANES:
        return "%h", [f"{vector}[{offset + port.width - 1}:{offset}]"]
    bits = port.width // port.lanes
    lanes = []
    for lane in range(port.lanes):
        low = offset + lane * bits
        piece = f"{vector}[{low + bits - 1}:{low}]" if bits > 1 else f"{vector}[{low}]"
        lanes.append(f"$signed({piece})" if port.signed else piece)
    text = "%0d" if port.lanes == 1 else "[" + ", ".join(["%0d"] * port.lanes) + "]"
    return text, lanes

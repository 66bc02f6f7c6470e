"""A file-driven Verilog testbench for the streaming units, and the Python side that runs it
under Icarus Verilog: fast enough for 10,000 rows of up to 1,024 elements (cocotb, one Python
call per signal change, is not).

The stimulus is one word per line for `$readmemh`: two op bits over a payload. OP_BEAT drives
one input beat (the unit's beat ports are slices of the payload) and waits for the handshake;
OP_PARAM, once every row sent so far has come out, writes the unit's parameter ports and pulses
`par_we`; OP_TABLE writes the bench's own table (the attention tile's v rows, driven by key
index, so a v matrix shared by many query rows is in the file once). Both take their wide
payload from a second file (wide.hex) by the index in their word, so beats stay narrow. The
bench writes every output beat (`<out_data hex> <out_count>`) and, after a row's last beat,
`C <cycles>`: clock cycles from the one taking the row's first beat to the one delivering its
last result, both counted. With `stall`, in_valid and out_ready drop at random (1 cycle in 4)
so the handshakes are exercised; without it the cycles are the units' documented formulas.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mfmaccel.errors import UserInputError

OP_BEAT, OP_PARAM, OP_TABLE = 0, 1, 2
CYCLE_LIMIT = 1 << 31  # cycles before the bench gives up (a unit that never answers)
INDEX_BITS = 24  # a parameter or table op's word holds the index of its wide payload


@dataclass(frozen=True)
class Field:
    port: str
    width: int


@dataclass(frozen=True)
class Table:
    """The bench's own memory, written by OP_TABLE (payload: data, then address above it) and
    driven onto `port` at the index of the current key within its row."""

    port: str
    width: int
    depth: int

    @property
    def address_bits(self) -> int:
        return max(1, (self.depth - 1).bit_length())


@dataclass(frozen=True)
class Harness:
    """How the bench drives one unit: its beat ports, parameter ports and output width."""

    top: str
    beat: tuple[Field, ...]
    out_width: int
    count_width: int
    param: tuple[Field, ...] = ()
    table: Table | None = None

    @property
    def beat_bits(self) -> int:
        """Payload bits of a stimulus word: a beat, or the index of a wide payload."""
        return max(sum(f.width for f in self.beat), INDEX_BITS)

    @property
    def wide_bits(self) -> int:
        """Bits of a wide payload: a parameter write, or a table entry above its address."""
        table = self.table.width + self.table.address_bits if self.table else 0
        return max(sum(f.width for f in self.param), table, 1)


def pack_fields(fields: Sequence[Field], values: dict[str, int]) -> int:
    """The values (two's complement) packed in `fields`' order, the first lowest."""
    payload, offset = 0, 0
    for f in fields:
        payload |= (values.get(f.port, 0) & ((1 << f.width) - 1)) << offset
        offset += f.width
    return payload


@dataclass
class Stimulus:
    """The words for one simulation, the wide payloads its parameter and table ops index (in a
    file of their own, so beats stay narrow), and the rows it carries."""

    words: list[int] = field(default_factory=list)
    wide: list[int] = field(default_factory=list)
    rows: int = 0
    beat_bits: int = 0  # the harness's, once a word is in

    def beat(self, harness: Harness, **values: int) -> None:
        self.beat_bits = harness.beat_bits
        self.words.append((OP_BEAT << harness.beat_bits) | pack_fields(harness.beat, values))

    def extend(self, other: Stimulus) -> None:
        """`other`'s words after these, its wide payloads after these (indices moved on)."""
        offset = len(self.wide)
        for word in other.words:
            self.words.append(word if word >> other.beat_bits == OP_BEAT else word + offset)
        self.wide += other.wide
        self.rows += other.rows
        self.beat_bits = self.beat_bits or other.beat_bits

    def param(self, harness: Harness, **values: int) -> None:
        self._wide(harness, OP_PARAM, pack_fields(harness.param, values))

    def table(self, harness: Harness, address: int, data: int) -> None:
        assert harness.table is not None
        width = harness.table.width
        self._wide(harness, OP_TABLE, (data & ((1 << width) - 1)) | (address << width))

    def _wide(self, harness: Harness, op: int, payload: int) -> None:
        if len(self.wide) >= 1 << INDEX_BITS:
            raise ValueError(f"more than 2^{INDEX_BITS} parameter and table writes in one run")
        self.wide.append(payload)
        self.beat_bits = harness.beat_bits
        self.words.append((op << harness.beat_bits) | (len(self.wide) - 1))


@dataclass(frozen=True)
class RowOut:
    beats: list[tuple[int, int]]  # (out_data, out_count) per output beat
    cycles: int


def _slices(fields: Sequence[Field], source: str) -> list[str]:
    lines, offset = [], 0
    for f in fields:
        lines.append(f"    wire [{f.width - 1}:0] {f.port} = {source}[{offset} +: {f.width}];")
        offset += f.width
    return lines


def testbench_verilog(harness: Harness, stimulus: Stimulus, *, stall: bool, seed: int) -> str:
    """The bench module `stream_tb` for `harness`'s unit and this stimulus (stim.hex in, out.txt
    out, both in the simulation's folder)."""
    pw, ww = harness.beat_bits, harness.wide_bits
    lines = [f"""`timescale 1ns/1ps
module stream_tb;
    localparam N = {len(stimulus.words)}, ROWS = {max(1, stimulus.rows)}, PW = {pw};
    localparam NW = {max(1, len(stimulus.wide))}, WW = {ww};
    localparam STALL = {int(stall)};
    reg clk = 1'b0;
    always #5 clk = ~clk;
    reg rst = 1'b1;
    reg [PW+1:0] stim [0:N-1];
    reg [WW-1:0] wide_mem [0:NW-1];
    integer ip = 0, rows_in = 0, rows_out = 0, cycle = 0, key = 0, fd;
    integer seed = {seed};
    integer starts [0:ROWS-1];
    reg row_open = 1'b0, stall_in = 1'b0, stall_out = 1'b0;
    wire have = ip < N;
    wire [PW+1:0] word = have ? stim[ip] : {{(PW+2){{1'b0}}}};
    wire [1:0] op = word[PW+1:PW];
    wire [PW-1:0] payload = word[PW-1:0];
    wire idle = rows_out == rows_in && !row_open;
    wire in_valid = have && op == 2'd0 && !stall_in;
    wire par_we = have && op == 2'd1 && idle;
    wire table_we = have && op == 2'd2 && idle;
    wire [WW-1:0] wide = wide_mem[payload[{INDEX_BITS - 1}:0]];
    reg [WW-1:0] held = {{WW{{1'b0}}}};
    wire [WW-1:0] param_payload = par_we ? wide : held;
    wire in_ready, out_valid, out_last;
    wire out_ready = !stall_out;
    wire [{harness.out_width - 1}:0] out_data;
    wire [{harness.count_width - 1}:0] out_count;"""]
    lines += _slices(harness.beat, "payload") + _slices(harness.param, "param_payload")
    ports = [f.port for f in harness.beat + harness.param]
    if harness.param:
        ports.append("par_we")
    if harness.table:
        table = harness.table
        lines.append(f"""    reg [{table.width - 1}:0] table_mem [0:{table.depth - 1}];
    wire [{table.width - 1}:0] {table.port} = table_mem[key];
    always @(posedge clk)
        if (table_we) table_mem[wide[{table.width} +: {table.address_bits}]]
            <= wide[{table.width - 1}:0];""")
        ports.append(table.port)
    connections = ",\n        ".join(
        f".{p}({p})" for p in ["clk", "rst", "in_valid", "in_ready", *ports, "out_valid",
                                "out_ready", "out_data", "out_count", "out_last"])
    lines.append(f"""    {harness.top} dut (
        {connections}
    );
    initial begin
        $readmemh("stim.hex", stim);
        $readmemh("wide.hex", wide_mem);
        fd = $fopen("out.txt", "w");
        repeat (2) @(negedge clk);
        rst = 1'b0;
    end
    always @(posedge clk) begin
        if (!rst) begin
            cycle <= cycle + 1;
            if (STALL) begin
                stall_in <= ($random(seed) & 3) == 0;
                stall_out <= ($random(seed) & 3) == 0;
            end
            if ((in_valid && in_ready) || par_we || table_we) ip <= ip + 1;
            if (par_we) held <= wide;
            if (in_valid && in_ready) begin
                if (!row_open) starts[rows_in] <= cycle;
                row_open <= !in_last;
                key <= in_last ? 0 : key + 1;
                if (in_last) rows_in <= rows_in + 1;
            end
            if (out_valid && out_ready) begin
                $fwrite(fd, "%h %0d\\n", out_data, out_count);
                if (out_last) begin
                    $fwrite(fd, "C %0d\\n", cycle - starts[rows_out] + 1);
                    rows_out <= rows_out + 1;
                end
            end
            if (ip == N && rows_out == ROWS) begin
                $fclose(fd);
                $finish;
            end
            if (cycle == {CYCLE_LIMIT - 1}) begin
                $fwrite(fd, "TIMEOUT\\n");
                $fclose(fd);
                $finish;
            end
        end
    end
endmodule
""")
    return "\n".join(lines)


def _parse(text: str) -> list[RowOut]:
    rows, beats = [], []
    for line in text.splitlines():
        if line == "TIMEOUT":
            raise RuntimeError("the unit stopped answering (testbench timeout)")
        head, tail = line.split()
        if head == "C":
            rows.append(RowOut(beats, int(tail)))
            beats = []
        else:
            if "x" in head.lower() or "z" in head.lower():
                raise RuntimeError(f"the unit delivered undefined bits: {head}")
            beats.append((int(head, 16), int(tail)))
    return rows


SIMULATORS = ("icarus", "verilator")


def require_simulator(simulator: str) -> None:
    tools = {"icarus": ("iverilog", "vvp"), "verilator": ("verilator",)}
    if simulator not in tools:
        raise UserInputError(f"simulator must be one of {', '.join(SIMULATORS)}, got "
                             f"{simulator!r}")
    missing = [tool for tool in tools[simulator] if shutil.which(tool) is None]
    if missing:
        raise UserInputError(f"{' and '.join(missing)} not installed; `make test` installs "
                             f"it (Debian's {tools[simulator][0]} package)")


def run_tool(command: list[str], work: Path, what: str) -> None:
    done = subprocess.run(command, cwd=work, capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)
    if done.returncode:
        raise RuntimeError(f"{what} failed: {(done.stderr or done.stdout).strip()[-800:]}")


def _simulation(simulator: str, sources: list[str], work: Path) -> list[str]:
    """Compile the bench and return the command that runs it."""
    if simulator == "icarus":
        run_tool(["iverilog", "-g2005", "-o", "sim.vvp", "-s", "stream_tb", "stream_tb.v",
              *sources], work, "iverilog")
        return ["vvp", "-n", "sim.vvp"]
    run_tool(["verilator", "--binary", "--timing", "-Wno-fatal", "-Wno-lint", "-Wno-style",
          "--top-module", "stream_tb", "--Mdir", "obj", "-o", "simv", "-j", "2",
          "stream_tb.v", *sources], work, "verilator")
    return [str(work / "obj" / "simv")]


def run_bench(harness: Harness, stimulus: Stimulus, sources: Sequence[Path], work: Path, *,
              stall: bool = False, seed: int = 0, simulator: str = "icarus") -> list[RowOut]:
    """Compile the bench with the unit's `sources` (Icarus, or Verilator: slower to build,
    far faster to run), run it in `work`, and return what came out, row by row."""
    require_simulator(simulator)
    work.mkdir(parents=True, exist_ok=True)
    digits = -(-(harness.beat_bits + 2) // 4)
    (work / "stim.hex").write_text("".join(f"{w:0{digits}x}\n" for w in stimulus.words))
    digits = -(-harness.wide_bits // 4)
    (work / "wide.hex").write_text("".join(f"{w:0{digits}x}\n" for w in stimulus.wide or [0]))
    (work / "stream_tb.v").write_text(testbench_verilog(harness, stimulus, stall=stall,
                                                         seed=seed))
    (work / "out.txt").unlink(missing_ok=True)
    command = _simulation(simulator, [str(Path(s).resolve()) for s in sources], work)
    run_tool(command, work, simulator)
    if not (work / "out.txt").is_file():
        raise RuntimeError(f"{simulator} wrote no output")
    rows = _parse((work / "out.txt").read_text())
    if len(rows) != stimulus.rows:
        raise RuntimeError(f"the unit delivered {len(rows)} rows of {stimulus.rows}")
    return rows

"""What every streaming unit (`hw.rtl.stream_*`) shares: the handshake, the row buffer, and
the sequential divider and square root that per-row scalars go through.

The streaming interface: a row enters as beats of LANES elements (`in_data`, lane i in bits
[i*W, (i+1)*W)) under a valid/ready handshake (a beat moves on a rising edge where both are
high); `in_last` marks a row's last beat and `in_count` (1..LANES) says how many of its lanes
hold elements (every other beat is full). Results leave the same way (`out_valid`,
`out_ready`, `out_data`, `out_count`, `out_last`); `out_ready` may drop at any time. Rows are
1..MAX_ROW elements long, MAX_ROW a generation parameter (`RtlConfig.max_row`): a longer row
overruns the row buffer, so the host (the Python driver in `hw.rtl.testbench_stream`) refuses
it. A unit that needs a second look at its row keeps it in a row buffer, a module of its own
holding one `reg [WIDTH-1:0] mem [0:DEPTH-1]` with one write port and one registered read port:
the shape of a one-read, one-write SRAM macro, which it can be swapped for.

Helper modules are emitted into each unit's file under the unit's name as prefix
(`stream_softmax_rowbuf`), so every file compiles on its own and no two files define the same
module.
"""

from __future__ import annotations

from mfmaccel.hw.intops.activations import MAX_EXP_SHIFT, IExp


def bits_for(value: int) -> int:
    """Bits of an unsigned number that must hold 0..value."""
    return max(1, int(value).bit_length())


def beats(length: int, lanes: int) -> int:
    """Beats a row of `length` elements takes at `lanes` elements per beat."""
    return -(-length // lanes)


def even(width: int) -> int:
    """`width` rounded up to an even number (the square root takes bits in pairs)."""
    return width + width % 2


def zext(expr: str, width: int, target: int) -> str:
    """Unsigned `expr` of `width` bits zero-extended to `target` bits (Verilog text)."""
    return expr if width == target else f"{{{{{target - width}{{1'b0}}}}, {expr}}}"


def low_pad(expr: str, width: int, target: int) -> str:
    """`expr` of `width` bits shifted to the top of `target` bits (zeros below it)."""
    return expr if width == target else f"{{{expr}, {{{target - width}{{1'b0}}}}}}"


def stream_ports(in_width: str, out_width: str, count_width: int) -> str:
    """The handshake ports every streaming unit starts with (Verilog port list text)."""
    return f"""    input  wire clk,
    input  wire rst,
    input  wire in_valid,
    output wire in_ready,
    input  wire [{in_width}-1:0] in_data,
    input  wire [{count_width - 1}:0] in_count,   // lanes used in the last beat, 1..LANES
    input  wire in_last,
    output reg  out_valid,
    input  wire out_ready,
    output reg  [{out_width}-1:0] out_data,
    output reg  [{count_width - 1}:0] out_count,
    output reg  out_last"""


def _helper(text: str) -> str:
    """A helper module shares its unit's file, whose name is the unit's: tell Verilator."""
    return f"/* verilator lint_off DECLFILENAME */\n{text}/* verilator lint_on DECLFILENAME */\n"


def rowbuf_verilog(prefix: str) -> str:
    """`<prefix>_rowbuf`: DEPTH words of WIDTH bits, one write port, one registered read port
    with a read enable (a one-read, one-write SRAM's interface)."""
    return _helper(f"""// {prefix}_rowbuf: the row buffer, an inferred memory
// (one write port, one registered read port)
module {prefix}_rowbuf #(
    parameter WIDTH = 8,
    parameter DEPTH = 2,
    parameter AW = 1
) (
    input  wire clk,
    input  wire we,
    input  wire [AW-1:0] waddr,
    input  wire [WIDTH-1:0] wdata,
    input  wire re,
    input  wire [AW-1:0] raddr,
    output reg  [WIDTH-1:0] rdata
);
    reg [WIDTH-1:0] mem [0:DEPTH-1];
    always @(posedge clk) begin
        if (we) mem[waddr] <= wdata;
        if (re) rdata <= mem[raddr];
    end
endmodule
""")


def divider_verilog(prefix: str) -> str:
    """`<prefix>_divider`: unsigned restoring division, one quotient bit per cycle. `start`
    loads the dividend (its value shifted left by N_W - steps, so only `steps` bits are worked
    through) and `steps`; `steps` cycles later `busy` is low and `quotient` holds
    floor(value / divisor). The divisor must stay put while it works."""
    return _helper(f"""// {prefix}_divider: floor(dividend / divisor), one bit per cycle
module {prefix}_divider #(
    parameter N_W = 8,
    parameter D_W = 8,
    parameter S_W = 4
) (
    input  wire clk,
    input  wire rst,
    input  wire start,
    input  wire [N_W-1:0] dividend,  // the value << (N_W - steps)
    input  wire [D_W-1:0] divisor,
    input  wire [S_W-1:0] steps,
    output wire busy,
    output wire [N_W-1:0] quotient
);
    reg [N_W-1:0] q;
    reg [D_W-1:0] rest;
    reg [S_W-1:0] left;
    wire [D_W:0] trial = {{rest, q[N_W-1]}};
    wire fits = trial >= {{1'b0, divisor}};
    /* verilator lint_off UNUSEDSIGNAL */  // below the divisor once it fits: D_W bits
    wire [D_W:0] less = trial - {{1'b0, divisor}};
    /* verilator lint_on UNUSEDSIGNAL */
    always @(posedge clk) begin
        if (rst) begin
            left <= {{S_W{{1'b0}}}};
        end else if (start) begin
            q <= dividend; rest <= {{D_W{{1'b0}}}}; left <= steps;
        end else if (left != {{S_W{{1'b0}}}}) begin
            rest <= fits ? less[D_W-1:0] : trial[D_W-1:0];
            q <= {{q[N_W-2:0], fits}};
            left <= left - 1'b1;
        end
    end
    assign busy = left != {{S_W{{1'b0}}}};
    assign quotient = q;
endmodule
""")


def isqrt_verilog(prefix: str) -> str:
    """`<prefix>_isqrt`: floor(sqrt(n)) digit by digit, two bits of n per cycle, W/2 cycles
    after `start` (W even); exact, like `intops.i_sqrt`'s Newton iteration."""
    return _helper(f"""// {prefix}_isqrt: floor(sqrt(n)), one root bit per cycle
module {prefix}_isqrt #(
    parameter W = 8,
    parameter S_W = 3
) (
    input  wire clk,
    input  wire rst,
    input  wire start,
    input  wire [W-1:0] n,
    output wire busy,
    output wire [W/2-1:0] root
);
    localparam integer HALF = W / 2;
    localparam [S_W-1:0] STEPS = HALF[S_W-1:0];
    reg [W-1:0] rest, value, place;
    reg [S_W-1:0] left;
    wire [W-1:0] trial = value + place;
    always @(posedge clk) begin
        if (rst) begin
            left <= {{S_W{{1'b0}}}};
        end else if (start) begin
            rest <= n; value <= {{W{{1'b0}}}}; place <= {{2'b01, {{(W-2){{1'b0}}}}}};
            left <= STEPS;
        end else if (left != {{S_W{{1'b0}}}}) begin
            if (rest >= trial) begin
                rest <= rest - trial;
                value <= (value >> 1) + place;
            end else begin
                value <= value >> 1;
            end
            place <= place >> 2;
            left <= left - 1'b1;
        end
    end
    assign busy = left != {{S_W{{1'b0}}}};
    /* verilator lint_off UNUSEDSIGNAL */  // the root lies in the low half
    wire [W-1:0] whole = value;
    /* verilator lint_on UNUSEDSIGNAL */
    assign root = whole[W/2-1:0];
endmodule
""")



def iexp_function(name: str, in_w: int, exp: IExp | None) -> str:
    """A Verilog function `name` computing the catalogue's `iexp` unit (`units.iexp_verilog`,
    `intops.IExp`) on a signed `in_w`-bit q <= 0: z = -q / q_ln2, p = q + z q_ln2,
    ((p + q_b)^2 + q_c) >> min(z, 31). The units call it inside their clocked blocks, so
    Icarus evaluates it once per cycle and lane (not once per intermediate net). With `exp`
    None the constants are the function's last three inputs (unsigned q_ln2, q_b, q_c of 32
    bits: a unit whose input scale changes per layer, as attention's does)."""
    w = in_w + 2
    if exp is None:
        header = "as hw.intops.IExp, its constants q_ln2, q_b, q_c given"
        inputs = ("        input [31:0] q_ln2;\n        input [31:0] q_b;\n"
                  "        input [31:0] q_c;\n")
        ln2 = f"{{{{{w - 32}{{1'b0}}}}, q_ln2}}"
        q_b = f"$signed({{{{{2 * w - 32}{{1'b0}}}}, q_b}})"
        q_c = f"$signed({{{{{2 * w - 32}{{1'b0}}}}, q_c}})"
    else:
        header = f"as hw.intops.IExp: q_ln2 {exp.q_ln2}, q_b {exp.q_b}, q_c {exp.q_c}"
        inputs, ln2 = "", f"{w}'d{exp.q_ln2}"
        q_b, q_c = f"{2 * w}'sd{exp.q_b}", f"{2 * w}'sd{exp.q_c}"
    return f"""    /* verilator lint_off UNUSEDSIGNAL */  // the peak fits 32 bits (IExp.build)
    function [31:0] {name};  // {header}
        input signed [{in_w - 1}:0] q;
{inputs}        reg [{w - 1}:0] z;
        reg signed [{w - 1}:0] p;
        reg signed [{2 * w - 1}:0] base, poly, shifted;
        begin
            z = (-{{{{2{{q[{in_w - 1}]}}}}, q}}) / {ln2};
            p = {{{{2{{q[{in_w - 1}]}}}}, q}} + $signed(z * {ln2});
            base = {{{{{w}{{p[{w - 1}]}}}}, p}} + {q_b};
            poly = base * base + {q_c};
            shifted = poly >>> ((z > {w}'d{MAX_EXP_SHIFT}) ? 6'd{MAX_EXP_SHIFT} : z[5:0]);
            {name} = shifted[31:0];
        end
    endfunction
    /* verilator lint_on UNUSEDSIGNAL */
"""


def requant_function(name: str, *, acc_w: int, m_w: int, shift_w: int, out_w: int) -> str:
    """A Verilog function `name`: the catalogue's `requant` unit (`intops.requantize`): acc x m,
    rounded half up by `shift`, saturated to out_w signed bits; the product is kept whole."""
    p_w = acc_w + m_w + 1
    top = (1 << (out_w - 1)) - 1
    return f"""    /* verilator lint_off UNUSEDSIGNAL */  // saturation covers the high bits
    function [{out_w - 1}:0] {name};  // saturate((acc * m + 2^(shift-1)) >>> shift)
        input signed [{acc_w - 1}:0] acc;
        input [{m_w - 1}:0] m;
        input [{shift_w - 1}:0] shift;
        reg signed [{p_w - 1}:0] product, half, rounded;
        begin
            product = {{{{{p_w - acc_w}{{acc[{acc_w - 1}]}}}}, acc}}
                    * $signed({{{p_w - m_w}'d0, m}});
            half = (shift == {shift_w}'d0) ? {p_w}'sd0 : ({p_w}'sd1 <<< (shift - 1'b1));
            rounded = (product + half) >>> shift;
            {name} = (rounded > {p_w}'sd{top}) ? {out_w}'sd{top}
                   : (rounded < -{p_w}'sd{top + 1}) ? -{out_w}'sd{top} - 1'b1
                   : rounded[{out_w - 1}:0];
        end
    endfunction
    /* verilator lint_on UNUSEDSIGNAL */
"""


def lane_mask(name: str, *, last: str, count: str, lanes: int) -> str:
    """`wire [lanes-1:0] name`: lane i holds an element unless `last` and i >= `count`."""
    cw = bits_for(lanes)
    return f"""    wire [{lanes - 1}:0] {name};
    genvar {name}_i;
    generate
        for ({name}_i = 0; {name}_i < {lanes}; {name}_i = {name}_i + 1) begin : {name}_lane
            localparam [{cw - 1}:0] INDEX = {name}_i;
            assign {name}[{name}_i] = !{last} || INDEX < {count};
        end
    endgenerate
"""


def drain_output(data: str) -> str:
    """The end of a row-buffered unit's output pass, shared by the norm and softmax units: one
    beat of `data` out per read of the buffer, then, after the row's last beat is taken, back
    to accepting input."""
    return f"""                        if (read) next_read <= next_read + 1'b1;
                        fetched <= read; fetched_beat <= next_read;
                        out_valid <= fetched;
                        out_data <= {data};
                        out_last <= fetched_last;
                        out_count <= fetched_last ? last_count : FULL;
                    end
                    if (out_valid && out_ready && out_last) begin
                        state <= S_IN; taken <= {{BW{{1'b0}}}};
                    end
                end
            endcase
        end
    end
endmodule
"""

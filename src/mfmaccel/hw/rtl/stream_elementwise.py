"""Streaming SiLU and rotary embedding units, bit-exact with `intops.i_silu` and
`intops.IRotary`.

SiLU needs nothing beyond the element itself: each beat goes through one registered stage
(the sigmoid from i-exp, mirrored for x > 0, then x * sigmoid(x)), so rows of any length stream
at one beat per cycle. Rotary pairs element i with element i + d/2 (HF's rotate_half), so the
head vector (`rotary_dim` elements, one row) is kept in two banks, first half and second half,
and read back with the cos and sin of the current position from the angle memory: the host
writes one position's `rotary_dim` cos and sin (`par_we`, a beat of lanes per `par_addr`) when
the position changes, and every head of that token (q and k alike) reuses them. A table for the
whole context (positions x rotary_dim x 32 bits: 2 Mbit at 1,024 positions) would dwarf the
unit; one position's angles are 2 kbit, and per token they cost rotary_dim / stream_lanes
writes against beats of every head.
"""

from __future__ import annotations

from mfmaccel.hw.intops import ISigmoid
from mfmaccel.hw.intops.rotary import ROTARY_BITS
from mfmaccel.hw.rtl.config import SIGMOID_BITS, RtlConfig
from mfmaccel.hw.rtl.stream_common import (
    beats,
    bits_for,
    iexp_function,
    lane_mask,
    rowbuf_verilog,
    stream_ports,
)

TABLE_BITS = ROTARY_BITS + 2  # |cos|, |sin| <= 2^14: 16 signed bits


def stream_silu_cycles(cfg: RtlConfig, length: int) -> int:
    """Cycles from taking a row's first beat to delivering its last result, both counted:
    B + 1 for B = ceil(length / stream_lanes) beats (one registered stage). Rows follow each
    other without a gap, so a long stream costs one cycle per beat."""
    return beats(length, cfg.stream_lanes) + 1


def stream_rotary_cycles(cfg: RtlConfig, length: int | None = None) -> int:
    """Cycles from taking a head vector's first beat to delivering its last result, both
    counted: 2 B + 2 for B = rotary_dim / stream_lanes beats (B to take both halves in, B + 2
    to read them back, rotate and deliver). `length` must be rotary_dim; the next vector's first
    beat is taken in the cycle after (the angle writes of a new position come between)."""
    return 2 * beats(cfg.rotary_dim, cfg.stream_lanes) + 2


def stream_silu_verilog(cfg: RtlConfig) -> str:
    """The module `stream_silu` with its i-exp lanes (the sigmoid's constants)."""
    sigmoid = ISigmoid.build(cfg.silu_input_scale * 2**cfg.silu_shift, SIGMOID_BITS)
    exp, lanes, in_w, shift = sigmoid.exp, cfg.stream_lanes, cfg.silu_bits, cfg.silu_shift
    cw = bits_for(lanes)
    coarse = ("{q[IN_W-1], q}" if not shift else
              f"($signed({{q[IN_W-1], q}}) + {in_w + 1}'sd{1 << (shift - 1)}) >>> {shift}")
    masks = lane_mask("in_used", last="in_last", count="in_count", lanes=lanes)
    return f"""// stream_silu: x * sigmoid(x), sigmoid(x) = e 2^{SIGMOID_BITS} / (e + 1) with
// e = iexp(-|x|) (mirrored for x > 0), x at scale {cfg.silu_input_scale!r} and {shift} bit(s)
// coarser for the sigmoid; as hw.intops.i_silu. One registered stage: ceil(n / {lanes}) + 1
// cycles per row.
module stream_silu (
{stream_ports("LANES*IN_W", "LANES*32", cw)}
);
    localparam LANES = {lanes}, IN_W = {in_w}, SB = {SIGMOID_BITS};
    localparam [32:0] Q_ONE = {sigmoid.q_one};
    localparam [SB:0] ONE = {1 << SIGMOID_BITS};
    assign in_ready = !out_valid || out_ready;
    wire take = in_valid && in_ready;
{masks}{iexp_function("iexp", in_w + 2, exp)}
    always @(posedge clk) begin : step
        reg signed [IN_W-1:0] q;
        reg signed [IN_W:0] coarse;
        reg [31:0] e;
        /* verilator lint_off UNUSEDSIGNAL */  // e / (e + 1) < 1: the quotient fits SB bits
        reg [SB+32:0] quotient;
        /* verilator lint_on UNUSEDSIGNAL */
        reg [SB:0] sigmoid;
        reg [LANES*32-1:0] results;
        integer k;
        if (rst) begin
            out_valid <= 1'b0;
        end else if (take) begin
            for (k = 0; k < LANES; k = k + 1) begin
                q = in_data[k*IN_W +: IN_W];
                coarse = {coarse};
                e = iexp(coarse[IN_W] ? {{coarse[IN_W], coarse}} : -{{coarse[IN_W], coarse}});
                quotient = {{1'b0, e, {{SB{{1'b0}}}}}} / {{{{SB{{1'b0}}}}, {{1'b0, e}} + Q_ONE}};
                sigmoid = (!coarse[IN_W] && coarse != {{(IN_W+1){{1'b0}}}})
                        ? ONE - {{1'b0, quotient[SB-1:0]}} : {{1'b0, quotient[SB-1:0]}};
                results[k*32 +: 32] = in_used[k] ? {{{{(32-IN_W){{q[IN_W-1]}}}}, q}}
                                                 * $signed({{{{(31-SB){{1'b0}}}}, sigmoid}})
                                                 : 32'd0;
            end
            out_valid <= 1'b1; out_data <= results; out_last <= in_last; out_count <= in_count;
        end else if (out_ready) begin
            out_valid <= 1'b0;
        end
    end
endmodule
"""


def stream_rotary_verilog(cfg: RtlConfig) -> str:
    """The module `stream_rotary` with its two half banks and its angle memory."""
    lanes, in_w, dim = cfg.stream_lanes, cfg.in_bits, cfg.rotary_dim
    total = dim // lanes
    half = total // 2
    cw, hw_, bw, aw = bits_for(lanes), bits_for(half - 1), bits_for(total), bits_for(total - 1)
    mixed = in_w + TABLE_BITS + 1
    return f"""// stream_rotary: out_i = round((x_i cos_i - x_(i+d/2) sin_i) / 2^{ROTARY_BITS}),
// i < d/2, and round((x_i cos_i + x_(i-d/2) sin_i) / 2^{ROTARY_BITS}) above, d = {dim}, cos
// and sin of the current position (written by the host); as hw.intops.IRotary.
// 2 * {total} + 2 cycles per head vector.
module stream_rotary (
{stream_ports("LANES*IN_W", "LANES*OUT_W", cw)},
    input  wire par_we,                       // cos and sin of beat par_addr of the position
    input  wire [{aw - 1}:0] par_addr,
    input  wire [LANES*T_W-1:0] par_cos,      // {lanes} signed int{TABLE_BITS}, 2^{ROTARY_BITS} = 1
    input  wire [LANES*T_W-1:0] par_sin
);
    localparam LANES = {lanes}, IN_W = {in_w}, OUT_W = {in_w + 2}, T_W = {TABLE_BITS};
    localparam BEATS = {total}, HALF = {half}, HW = {hw_}, BW = {bw}, CW = {cw}, AW = {aw};
    localparam M_W = {mixed};
    localparam [BW-1:0] LAST_BEAT = BEATS - 1, HALF_BEATS = HALF;
    localparam [CW-1:0] FULL = LANES;
    localparam signed [M_W-1:0] ROUND = {1 << (ROTARY_BITS - 1)};
    reg taking;                  // 1: taking the row in; 0: delivering it
    reg [BW-1:0] taken;
    reg [BW-1:0] next_read;
    reg fetched;
    reg [BW-1:0] fetched_beat;
    wire [LANES*IN_W-1:0] first_half, second_half;
    wire [LANES*2*T_W-1:0] angles;

    assign in_ready = taking;
    wire take = in_valid && in_ready;
    wire advance = !taking && (!out_valid || out_ready);
    wire read = advance && next_read < BEATS;
    wire upper = taken >= HALF_BEATS;
    /* verilator lint_off UNUSEDSIGNAL */  // a slot lies within its bank: HW bits
    wire [BW-1:0] in_slot = upper ? taken - HALF_BEATS : taken;
    wire [BW-1:0] read_slot = (next_read >= HALF_BEATS) ? next_read - HALF_BEATS : next_read;
    /* verilator lint_on UNUSEDSIGNAL */
    wire fetched_upper = fetched_beat >= HALF_BEATS;
    /* verilator lint_off UNUSEDSIGNAL */  // a head vector fills every beat
    wire unused_count = ^in_count;
    /* verilator lint_on UNUSEDSIGNAL */

    stream_rotary_rowbuf #(.WIDTH(LANES*IN_W), .DEPTH(HALF), .AW(HW)) low_bank (
        .clk(clk), .we(take && !upper), .waddr(in_slot[HW-1:0]), .wdata(in_data),
        .re(read), .raddr(read_slot[HW-1:0]), .rdata(first_half)
    );
    stream_rotary_rowbuf #(.WIDTH(LANES*IN_W), .DEPTH(HALF), .AW(HW)) high_bank (
        .clk(clk), .we(take && upper), .waddr(in_slot[HW-1:0]), .wdata(in_data),
        .re(read), .raddr(read_slot[HW-1:0]), .rdata(second_half)
    );
    stream_rotary_rowbuf #(.WIDTH(LANES*2*T_W), .DEPTH(BEATS), .AW(AW)) angle_mem (
        .clk(clk), .we(par_we && taking && taken == {{BW{{1'b0}}}}), .waddr(par_addr),
        .wdata({{par_sin, par_cos}}), .re(read), .raddr(next_read[AW-1:0]), .rdata(angles)
    );

    always @(posedge clk) begin : step
        reg signed [IN_W-1:0] x, partner;
        reg signed [T_W-1:0] c, s;
        /* verilator lint_off UNUSEDSIGNAL */  // |result| < 2^(OUT_W-1)
        reg signed [M_W-1:0] mixed;
        /* verilator lint_on UNUSEDSIGNAL */
        reg [LANES*OUT_W-1:0] results;
        integer k;
        if (rst) begin
            taking <= 1'b1; taken <= {{BW{{1'b0}}}}; out_valid <= 1'b0; fetched <= 1'b0;
        end else if (taking) begin
            if (take) begin
                taken <= taken + 1'b1;
                if (in_last) begin
                    taking <= 1'b0; next_read <= {{BW{{1'b0}}}}; fetched <= 1'b0;
                end
            end
        end else begin
            if (advance) begin
                for (k = 0; k < LANES; k = k + 1) begin
                    x = fetched_upper ? second_half[k*IN_W +: IN_W] : first_half[k*IN_W +: IN_W];
                    partner = fetched_upper ? first_half[k*IN_W +: IN_W]
                                            : second_half[k*IN_W +: IN_W];
                    c = angles[k*T_W +: T_W];
                    s = angles[LANES*T_W + k*T_W +: T_W];
                    mixed = {{{{(M_W-IN_W){{x[IN_W-1]}}}}, x}} * {{{{(M_W-T_W){{c[T_W-1]}}}}, c}};
                    if (fetched_upper)
                        mixed = mixed + {{{{(M_W-IN_W){{partner[IN_W-1]}}}}, partner}}
                                      * {{{{(M_W-T_W){{s[T_W-1]}}}}, s}};
                    else
                        mixed = mixed - {{{{(M_W-IN_W){{partner[IN_W-1]}}}}, partner}}
                                      * {{{{(M_W-T_W){{s[T_W-1]}}}}, s}};
                    mixed = mixed + ROUND;
                    mixed = mixed >>> {ROTARY_BITS};  // signed: arithmetic
                    results[k*OUT_W +: OUT_W] = mixed[OUT_W-1:0];
                end
                if (read) next_read <= next_read + 1'b1;
                fetched <= read; fetched_beat <= next_read;
                out_valid <= fetched;
                out_data <= results;
                out_last <= fetched_beat == LAST_BEAT;
                out_count <= FULL;
            end
            if (out_valid && out_ready && out_last) begin
                taking <= 1'b1; taken <= {{BW{{1'b0}}}};
            end
        end
    end
endmodule
""" + rowbuf_verilog("stream_rotary")

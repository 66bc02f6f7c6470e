"""The streaming integer softmax: a row of any length 1..max_row, `stream_lanes` int32 scores
per beat, bit-exact with `intops.i_softmax`.

i_softmax needs the row maximum before the first exponential and the row sum before the first
division, so the row is looked at three times (the golden model's arithmetic cannot be
streamed in one pass without changing its rounding: an online running sum rescaled by
i-exp(-d) floors differently). Pass 1 takes the beats in, writes them to the row buffer and
keeps the running maximum; pass 2 reads them back and sums i-exp(q - max) (`iexp` lanes);
pass 3 reads them again through the same `iexp` lanes and divides:
p = min(floor(e 2^softmax_bits / sum), 2^softmax_bits - 1).
"""

from __future__ import annotations

from mfmaccel.hw.intops import IExp
from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.stream_common import (
    beats,
    bits_for,
    drain_output,
    iexp_function,
    lane_mask,
    rowbuf_verilog,
    stream_ports,
)


def stream_softmax_cycles(cfg: RtlConfig, length: int) -> int:
    """Clock cycles from the one taking a row's first beat to the one delivering its last
    result, both counted, with the input always valid and the output always ready:
    3 B + 3 for B = ceil(length / stream_lanes) beats (B to take the row in, B + 1 to sum its
    exponentials, B + 2 to read, divide and deliver it). The next row's first beat is taken in
    the cycle after, so this is also the unit's period per row."""
    return 3 * beats(length, cfg.stream_lanes) + 3


def stream_softmax_verilog(cfg: RtlConfig, *, runtime_exp: bool = False) -> str:
    """The module `stream_softmax` with its row buffer and its i-exp lanes. With
    `runtime_exp` the i-exp constants are ports (`exp_ln2`, `exp_b`, `exp_c`: an
    `intops.IExp`'s q_ln2, q_b, q_c, held while a row is in the unit), so one unit serves
    every layer's score scale (the accelerator top, `hw.rtl.top`); else they are built in
    from `cfg.exp_input_scale`."""
    prefix = "stream_softmax"
    exp = None if runtime_exp else IExp.build(cfg.exp_input_scale)
    lanes, in_w, out_w = cfg.stream_lanes, cfg.acc_bits, cfg.softmax_bits
    depth = beats(cfg.max_row, lanes)
    aw, bw, cw = bits_for(depth - 1), bits_for(depth), bits_for(lanes)
    sum_w = 31 + bits_for(cfg.max_row)
    masks = (lane_mask("in_used", last="in_last", count="in_count", lanes=lanes)
             + lane_mask("out_used", last="fetched_last", count="last_count", lanes=lanes))
    scale = (f"input scale {cfg.exp_input_scale!r}" if exp is not None
             else "the input scale its exp_* ports give")
    constants = ("" if exp is not None else """,
    input  wire [31:0] exp_ln2,  // hw.intops.IExp's q_ln2, q_b, q_c
    input  wire [31:0] exp_b,
    input  wire [31:0] exp_c""")
    arguments = "" if exp is not None else ", exp_ln2, exp_b, exp_c"
    return f"""// stream_softmax: p_i = min(floor(iexp(q_i - max) * 2^{out_w} / sum), 2^{out_w} - 1)
// over rows of 1..{cfg.max_row} int{in_w} scores, {lanes} per beat; as hw.intops.i_softmax at
// {scale}. Three passes over the row buffer:
// 3 ceil(n / {lanes}) + 3 cycles per row.
module stream_softmax (
{stream_ports("LANES*IN_W", "LANES*OUT_W", cw)}{constants}
);
    localparam LANES = {lanes}, IN_W = {in_w}, OUT_W = {out_w}, SUM_W = {sum_w};
    localparam DEPTH = {depth}, AW = {aw}, BW = {bw}, CW = {cw};
    localparam [1:0] S_IN = 2'd0, S_SUM = 2'd1, S_OUT = 2'd2;
    localparam [CW-1:0] FULL = LANES;
    localparam [SUM_W+OUT_W-1:0] LARGEST = {{{{SUM_W{{1'b0}}}}, {{OUT_W{{1'b1}}}}}};
    reg [1:0] state;
    reg [BW-1:0] taken;          // beats of the row taken (all of them after pass 1)
    reg [CW-1:0] last_count;
    reg signed [IN_W-1:0] row_max;
    reg [SUM_W-1:0] total;
    reg [BW-1:0] next_read;      // the beat the next read fetches
    reg fetched;                 // the buffer's output holds beat `fetched_beat`
    reg [BW-1:0] fetched_beat;
    wire [LANES*IN_W-1:0] stored;

    assign in_ready = state == S_IN;
    wire take = in_valid && in_ready;
    wire advance = state == S_SUM || (state == S_OUT && (!out_valid || out_ready));
    wire read = advance && next_read < taken;
    wire fetched_last = fetched_beat + 1'b1 == taken;

    {prefix}_rowbuf #(.WIDTH(LANES*IN_W), .DEPTH(DEPTH), .AW(AW)) row (
        .clk(clk), .we(take), .waddr(taken[AW-1:0]), .wdata(in_data),
        .re(read), .raddr(next_read[AW-1:0]), .rdata(stored)
    );
{masks}{iexp_function("iexp", in_w + 1, exp)}
    always @(posedge clk) begin : step
        reg signed [IN_W-1:0] x, beat_max;
        reg [SUM_W-1:0] beat_sum;
        reg [31:0] e;
        reg [SUM_W+OUT_W-1:0] quotient;
        reg [LANES*OUT_W-1:0] probabilities;
        reg [LANES*32-1:0] exps;
        integer k;
        // i-exp(q - max) of the beat the buffer delivers: one set of lanes for passes 2 and 3
        beat_sum = {{SUM_W{{1'b0}}}};
        for (k = 0; k < LANES; k = k + 1) begin
            x = stored[k*IN_W +: IN_W];
            e = (state != S_IN && out_used[k])
              ? iexp({{x[IN_W-1], x}} - {{row_max[IN_W-1], row_max}}{arguments}) : 32'd0;
            exps[k*32 +: 32] = e;
            beat_sum = beat_sum + {{{{(SUM_W-32){{1'b0}}}}, e}};
        end
        if (rst) begin
            state <= S_IN; taken <= {{BW{{1'b0}}}}; out_valid <= 1'b0; fetched <= 1'b0;
        end else begin
            case (state)
                S_IN: if (take) begin  // pass 1: the running maximum
                    beat_max = in_data[IN_W-1:0];  // in_count >= 1: lane 0 holds an element
                    for (k = 1; k < LANES; k = k + 1) begin
                        x = in_data[k*IN_W +: IN_W];
                        if (in_used[k] && x > beat_max) beat_max = x;
                    end
                    if (taken == {{BW{{1'b0}}}} || beat_max > row_max) row_max <= beat_max;
                    taken <= taken + 1'b1;
                    if (in_last) begin
                        last_count <= in_count; state <= S_SUM; total <= {{SUM_W{{1'b0}}}};
                        next_read <= {{BW{{1'b0}}}}; fetched <= 1'b0;
                    end
                end
                S_SUM: begin  // pass 2: the sum of i-exp(q - max)
                    if (read) next_read <= next_read + 1'b1;
                    fetched <= read; fetched_beat <= next_read;
                    if (fetched) total <= total + beat_sum;
                    if (fetched && fetched_last) begin
                        state <= S_OUT; next_read <= {{BW{{1'b0}}}}; fetched <= 1'b0;
                    end
                end
                default: begin  // S_OUT, pass 3: divide and deliver
                    if (advance) begin
                        for (k = 0; k < LANES; k = k + 1) begin
                            quotient = {{{{(SUM_W-32){{1'b0}}}}, exps[k*32 +: 32],
                                         {{OUT_W{{1'b0}}}}}}
                                     / {{{{OUT_W{{1'b0}}}}, total}};
                            probabilities[k*OUT_W +: OUT_W] =
                                (quotient > LARGEST) ? {{OUT_W{{1'b1}}}}
                                                                          : quotient[OUT_W-1:0];
                        end
{drain_output('probabilities')}""" + rowbuf_verilog(prefix)

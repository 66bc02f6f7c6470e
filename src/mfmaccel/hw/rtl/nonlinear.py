"""Verilog for the non-linear units around the GEMMs: i-GELU and the integer softmax.

Both are combinational (one element, or one row of `softmax_len` scores, per cycle) and take
their integer constants from the same `build` as the golden model (`hw.intops`), so they
compute exactly what it computes: the testbenches check every output bit.
"""

from __future__ import annotations

from mfmaccel.hw.intops import IGelu
from mfmaccel.hw.rtl.config import RtlConfig


def _sext(name: str, width: int, target: int) -> str:
    """Signed `name` of `width` bits sign-extended to `target` bits."""
    if width == target:
        return name
    return f"{{{{{target - width}{{{name}[{width - 1}]}}}}, {name}}}"


def igelu_verilog(cfg: RtlConfig) -> str:
    """I-BERT's i-GELU on an int8 input at `gelu_input_scale`: erf by the clipped quadratic,
    out = -q (erf + q_c); `overflow` is high where the int32 result would not fit (the golden
    model raises there), so nothing wraps silently."""
    unit = IGelu.build(cfg.gelu_input_scale)
    width = 2 * 32 + cfg.in_bits + 4  # the product -q (erf + q_c) before the range check
    return f"""// igelu: GELU(q * S) / scale_out, S = {cfg.gelu_input_scale!r}, as hw.intops.IGelu
module igelu (
    input  wire signed [{cfg.in_bits - 1}:0] q,
    output wire signed [31:0] out,
    output wire overflow
);
    localparam W = {width};
    localparam signed [W-1:0] Q_B = {unit.q_b};  // negative: -(erf's clip point)
    localparam signed [W-1:0] Q_C = {unit.q_c};  // negative: 1 at the erf's scale
    wire signed [W-1:0] x = {_sext("q", cfg.in_bits, width)};
    wire signed [W-1:0] magnitude = x[W-1] ? -x : x;
    wire signed [W-1:0] clipped = (magnitude < -Q_B) ? magnitude : -Q_B;
    wire signed [W-1:0] base = clipped + Q_B;
    wire signed [W-1:0] poly = base * base + Q_C;
    wire signed [W-1:0] erf = x[W-1] ? -poly : ((x == 0) ? 0 : poly);
    wire signed [W-1:0] product = -x * (erf + Q_C);
    localparam signed [W-1:0] TOP = 2147483647, BOTTOM = -TOP - 1;
    assign overflow = (product > TOP) || (product < BOTTOM);
    /* verilator lint_off UNUSEDSIGNAL */  // the range check above covers the high bits
    assign out = product[31:0];
    /* verilator lint_on UNUSEDSIGNAL */
endmodule
"""


def softmax_verilog(cfg: RtlConfig) -> str:
    """The integer softmax over one row of `softmax_len` int32 scores: the row maximum, i-exp
    of each score minus it (the `iexp` unit), the row sum, and floor(e * 2^softmax_bits / sum)
    saturated to softmax_bits unsigned, as `intops.i_softmax`."""
    lanes, in_w, out_w = cfg.softmax_len, cfg.acc_bits, cfg.softmax_bits
    sum_w = 32 + max(1, (lanes - 1).bit_length())
    return f"""// softmax: p_i = floor(iexp(q_i - max) * 2^{out_w} / sum), {lanes} scores per cycle,
// as hw.intops.i_softmax at input scale {cfg.exp_input_scale!r}
module softmax (
    input  wire [{lanes * in_w - 1}:0] q,     // {lanes} signed int{in_w} scores
    output wire [{lanes * out_w - 1}:0] p     // {lanes} unsigned {out_w}-bit probabilities
);
    localparam LANES = {lanes}, IN_W = {in_w}, OUT_W = {out_w}, SUM_W = {sum_w};
    wire signed [IN_W-1:0] row_max = scan[LANES-1].max_so_far;
    wire [SUM_W-1:0] row_sum = scan[LANES-1].sum_so_far;
    genvar i;
    generate
        for (i = 0; i < LANES; i = i + 1) begin : scan
            wire signed [IN_W-1:0] lane = q[i*IN_W +: IN_W];
            wire signed [IN_W-1:0] max_so_far;
            wire [31:0] e;
            wire [SUM_W-1:0] sum_so_far;
            wire signed [IN_W:0] shifted = {{lane[IN_W-1], lane}}
                                         - {{row_max[IN_W-1], row_max}};
            iexp #(.IN_W(IN_W + 1)) unit (.q(shifted), .out(e));
            if (i == 0) begin : first
                assign max_so_far = lane;
                assign sum_so_far = {{{{(SUM_W-32){{1'b0}}}}, e}};
            end else begin : next
                assign max_so_far = (lane > scan[i-1].max_so_far) ? lane : scan[i-1].max_so_far;
                assign sum_so_far = scan[i-1].sum_so_far + {{{{(SUM_W-32){{1'b0}}}}, e}};
            end
        end
        for (i = 0; i < LANES; i = i + 1) begin : divide
            wire [SUM_W+OUT_W-1:0] numerator = {{{{(SUM_W-32){{1'b0}}}}, scan[i].e,
                                                 {{OUT_W{{1'b0}}}}}};
            wire [SUM_W+OUT_W-1:0] quotient = numerator / {{{{OUT_W{{1'b0}}}}, row_sum}};
            wire saturate = quotient > {{{{SUM_W{{1'b0}}}}, {{OUT_W{{1'b1}}}}}};
            /* verilator lint_off UNUSEDSIGNAL */  // saturate covers the high bits
            assign p[i*OUT_W +: OUT_W] = saturate ? {{OUT_W{{1'b1}}}} : quotient[OUT_W-1:0];
            /* verilator lint_on UNUSEDSIGNAL */
        end
    endgenerate
endmodule
"""


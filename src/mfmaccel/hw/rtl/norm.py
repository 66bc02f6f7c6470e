"""Verilog for the integer LayerNorm with its square root, as `intops.ILayerNorm`.

One row of `norm_len` int24 values per cycle (combinational): the mean rounded to nearest,
the variance, floor(sqrt) by the digit-by-digit method (exact, like the golden model's Newton
iteration, with no data-dependent loop), floor(2^31 / std), the normalised value with
NORM_BITS fraction bits, then gamma, beta and the dyadic requantization (the `requant` unit,
widened) to int8. gamma, beta, epsilon and the requantization factor are ports, so one unit
serves every LayerNorm of a model.
"""

from __future__ import annotations

from mfmaccel.hw.intops.norms import GAMMA_BITS, NORM_BITS, NORM_INPUT
from mfmaccel.hw.rtl.config import RtlConfig

EPS_BITS = 32


def _norm_widths(lanes: int) -> dict[str, int]:
    """Exact widths of each intermediate for rows of `lanes` int24 values."""
    grow = max(1, (lanes - 1).bit_length())
    y = NORM_INPUT.bits + 1
    variance = max(2 * y + grow, EPS_BITS) + 1
    variance += variance % 2  # the square root takes bits in pairs
    normalised = y + 33 - (31 - NORM_BITS) + 1
    return {"sum": NORM_INPUT.bits + grow, "y": y, "var": variance, "root": variance // 2,
            "norm": normalised, "acc": normalised + GAMMA_BITS + 2}


def layernorm_verilog(cfg: RtlConfig) -> str:
    """The module `layernorm`; instantiates `requant` (its file) with a wider accumulator."""
    lanes, w = cfg.norm_len, _norm_widths(cfg.norm_len)
    in_w, out_w = NORM_INPUT.bits, cfg.out_bits
    product = w["y"] + 33
    return f"""// layernorm: requant(((q - mean) * floor(2^31 / isqrt(var + eps))
//   >> {31 - NORM_BITS}) * gamma + beta), a row of {lanes} per cycle, as hw.intops.ILayerNorm
module layernorm (
    input  wire [{lanes * in_w - 1}:0] q,         // {lanes} signed int{in_w}
    input  wire [{lanes * GAMMA_BITS - 1}:0] gamma,     // {lanes} signed int{GAMMA_BITS}
    input  wire [{lanes * 32 - 1}:0] beta,       // {lanes} signed int32
    input  wire [{EPS_BITS - 1}:0] eps,              // epsilon at the input's squared scale
    input  wire [{cfg.multiplier_bits - 1}:0] rq_m,
    input  wire [{cfg.shift_bits - 1}:0] rq_shift,
    output wire [{lanes * out_w - 1}:0] out      // {lanes} signed int{out_w}
);
    localparam LANES = {lanes}, IN_W = {in_w}, SUM_W = {w["sum"]}, Y_W = {w["y"]};
    localparam VAR_W = {w["var"]}, ROOT_W = {w["root"]}, NORM_W = {w["norm"]};
    localparam ACC_W = {w["acc"]}, P_W = {product};

    function [ROOT_W-1:0] isqrt;  // floor(sqrt(n)), two bits of n per step
        input [VAR_W-1:0] n;
        reg [VAR_W-1:0] rest, root, place;
        integer step;
        begin
            rest = n;
            root = {{VAR_W{{1'b0}}}};
            place = {{2'b01, {{(VAR_W-2){{1'b0}}}}}};
            for (step = 0; step < ROOT_W; step = step + 1) begin
                if (rest >= root + place) begin
                    rest = rest - (root + place);
                    root = (root >> 1) + place;
                end else begin
                    root = root >> 1;
                end
                place = place >> 2;
            end
            isqrt = root[ROOT_W-1:0];
        end
    endfunction

    genvar i;
    generate
        for (i = 0; i < LANES; i = i + 1) begin : scan
            wire signed [IN_W-1:0] lane = q[i*IN_W +: IN_W];
            wire signed [SUM_W-1:0] sum_so_far;
            if (i == 0) begin : first
                assign sum_so_far = {{{{(SUM_W-IN_W){{lane[IN_W-1]}}}}, lane}};
            end else begin : next
                assign sum_so_far = scan[i-1].sum_so_far
                                  + {{{{(SUM_W-IN_W){{lane[IN_W-1]}}}}, lane}};
            end
        end
    endgenerate

    // mean = floor((sum + LANES/2) / LANES): Verilog's signed division truncates toward zero
    localparam signed [SUM_W:0] COUNT = LANES, HALF = LANES / 2;
    wire signed [SUM_W:0] centred = {{scan[LANES-1].sum_so_far[SUM_W-1],
                                      scan[LANES-1].sum_so_far}} + HALF;
    wire signed [SUM_W:0] truncated = centred / COUNT;
    wire signed [SUM_W:0] mean = (centred < 0 && truncated * COUNT != centred) ? truncated - 1
                                                                               : truncated;

    generate
        for (i = 0; i < LANES; i = i + 1) begin : centre
            /* verilator lint_off UNUSEDSIGNAL */  // y fits Y_W bits: mean lies within the row
            wire signed [SUM_W:0] wide_y = {{{{(SUM_W+1-IN_W){{scan[i].lane[IN_W-1]}}}},
                                             scan[i].lane}} - mean;
            /* verilator lint_on UNUSEDSIGNAL */
            wire signed [Y_W-1:0] y = wide_y[Y_W-1:0];
            wire signed [2*Y_W-1:0] y_wide = {{{{Y_W{{y[Y_W-1]}}}}, y}};
            wire signed [2*Y_W-1:0] y_squared = y_wide * y_wide;
            wire [VAR_W-1:0] square = {{{{(VAR_W-2*Y_W){{1'b0}}}}, y_squared}};
            wire [VAR_W-1:0] squares_so_far;
            if (i == 0) begin : first
                assign squares_so_far = square;
            end else begin : next
                assign squares_so_far = centre[i-1].squares_so_far + square;
            end
        end
    endgenerate

    localparam [VAR_W-1:0] COUNT_U = LANES;
    wire [VAR_W-1:0] variance = centre[LANES-1].squares_so_far / COUNT_U
                              + {{{{(VAR_W-{EPS_BITS}){{1'b0}}}}, eps}};
    wire [ROOT_W-1:0] root = isqrt(variance);
    wire [ROOT_W-1:0] std = (root == {{ROOT_W{{1'b0}}}}) ? {{{{(ROOT_W-1){{1'b0}}}}, 1'b1}} : root;
    localparam Q_W = {max(w["root"], 32) + 1};
    localparam [Q_W-1:0] TWO_31 = {max(w["root"], 32) + 1}'d{2**31};
    /* verilator lint_off UNUSEDSIGNAL */  // 2^31 / std <= 2^31: the top bits are zero
    wire [Q_W-1:0] quotient = TWO_31 / {{{{(Q_W-ROOT_W){{1'b0}}}}, std}};
    /* verilator lint_on UNUSEDSIGNAL */
    wire signed [33:0] factor = {{2'b00, quotient[31:0]}};
    localparam signed [P_W-1:0] ROUND = {{{{(P_W-{31 - NORM_BITS}){{1'b0}}}}, 1'b1,
                                          {{{30 - NORM_BITS}{{1'b0}}}}}};

    generate
        for (i = 0; i < LANES; i = i + 1) begin : affine
            wire signed [P_W-1:0] scaled = {{{{(P_W-Y_W){{centre[i].y[Y_W-1]}}}}, centre[i].y}}
                                         * {{{{(P_W-34){{factor[33]}}}}, factor}};
            /* verilator lint_off UNUSEDSIGNAL */  // the shift leaves the low bits behind
            wire signed [P_W-1:0] shifted = (scaled + ROUND) >>> {31 - NORM_BITS};
            /* verilator lint_on UNUSEDSIGNAL */
            wire signed [NORM_W-1:0] normalised = shifted[NORM_W-1:0];
            wire signed [{GAMMA_BITS - 1}:0] g = gamma[i*{GAMMA_BITS} +: {GAMMA_BITS}];
            wire signed [31:0] b = beta[i*32 +: 32];
            wire signed [ACC_W-1:0] acc = {{{{(ACC_W-NORM_W){{normalised[NORM_W-1]}}}}, normalised}}
                                        * {{{{(ACC_W-{GAMMA_BITS}){{g[{GAMMA_BITS - 1}]}}}}, g}}
                                        + {{{{(ACC_W-32){{b[31]}}}}, b}};
            requant #(.ACC_W(ACC_W), .M_W({cfg.multiplier_bits}), .SHIFT_W({cfg.shift_bits}),
                      .OUT_W({out_w})) unit (
                .acc(acc), .m(rq_m), .shift(rq_shift), .q(out[i*{out_w} +: {out_w}])
            );
        end
    endgenerate
endmodule
"""

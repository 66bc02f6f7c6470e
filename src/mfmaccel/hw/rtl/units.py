"""Verilog text for each unit, from an `RtlConfig`. Every module is plain Verilog-2005, one
clock, synchronous active-high reset, signed arithmetic spelled out with explicit widths."""

from __future__ import annotations

from mfmaccel.hw.rtl.config import RtlConfig


def requant_verilog(cfg: RtlConfig) -> str:
    """int32 accumulator x dyadic m, rounded half up by `shift`, saturated to out_bits: the
    same arithmetic as `hw.intops.requantize` (combinational)."""
    product = cfg.acc_bits + cfg.multiplier_bits + 1
    return f"""// requant: q = saturate((acc * m + 2^(shift-1)) >>> shift), as hw.intops.requantize
module requant #(
    parameter ACC_W = {cfg.acc_bits},
    parameter M_W = {cfg.multiplier_bits},
    parameter SHIFT_W = {cfg.shift_bits},
    parameter OUT_W = {cfg.out_bits}
) (
    input  wire signed [ACC_W-1:0] acc,
    input  wire [M_W-1:0] m,
    input  wire [SHIFT_W-1:0] shift,
    output wire signed [OUT_W-1:0] q
);
    localparam P_W = {product};
    wire signed [P_W-1:0] wide_acc = {{{{(P_W-ACC_W){{acc[ACC_W-1]}}}}, acc}};
    wire signed [P_W-1:0] wide_m = {{{{(P_W-M_W){{1'b0}}}}, m}};
    wire signed [P_W-1:0] product = wide_acc * wide_m;
    wire signed [P_W-1:0] one = {{{{(P_W-1){{1'b0}}}}, 1'b1}};
    wire signed [P_W-1:0] half = (shift == {{SHIFT_W{{1'b0}}}}) ? {{P_W{{1'b0}}}}
                                                             : (one <<< (shift - 1'b1));
    wire signed [P_W-1:0] rounded = (product + half) >>> shift;
    wire signed [P_W-1:0] q_max = (one <<< (OUT_W - 1)) - one;
    wire signed [P_W-1:0] q_min = -(one <<< (OUT_W - 1));
    assign q = (rounded > q_max) ? q_max[OUT_W-1:0]
             : (rounded < q_min) ? q_min[OUT_W-1:0]
             : rounded[OUT_W-1:0];
endmodule
"""


def mac_array_verilog(cfg: RtlConfig) -> str:
    """An output-stationary rows x cols MAC array in SwiftTron's broadcast form: each cycle
    with `en` high adds the rank-1 update a (a column of A) x b (a row of B) to every
    accumulator; `load` sets the accumulators to the per-column bias instead, shifted right
    (rounded) by the row's `bias_shift`: rows of A with per-token power-of-two scales
    (`intops.token_shifts`) need their bias that much coarser (`intops.int_gemm`).
    Accumulators are read out flattened, row-major."""
    return f"""// mac_array: acc[i][j] <= load ? round(bias[j] / 2^bias_shift[i])
//                                : acc[i][j] + a[i] * b[j] (when en)
module mac_array #(
    parameter ROWS = {cfg.rows},
    parameter COLS = {cfg.cols},
    parameter IN_W = {cfg.in_bits},
    parameter ACC_W = {cfg.acc_bits},
    parameter SHIFT_W = {cfg.shift_bits}
) (
    input  wire clk,
    input  wire rst,
    input  wire load,
    input  wire en,
    input  wire [ROWS*IN_W-1:0] a,
    input  wire [COLS*IN_W-1:0] b,
    input  wire [COLS*ACC_W-1:0] bias,
    input  wire [ROWS*SHIFT_W-1:0] bias_shift,
    output wire [ROWS*COLS*ACC_W-1:0] acc
);
    genvar i, j;
    generate
        for (i = 0; i < ROWS; i = i + 1) begin : row
            wire [SHIFT_W-1:0] s = bias_shift[i*SHIFT_W +: SHIFT_W];
            // a shift of ACC_W or more leaves (bias + 2^(s-1)) >> s = 0 for every bias
            wire wipe = s >= ACC_W;
            wire [ACC_W:0] half = ({{{{ACC_W{{1'b0}}}}, 1'b1}} << s) >> 1;
            for (j = 0; j < COLS; j = j + 1) begin : col
                wire signed [IN_W-1:0] a_i = a[i*IN_W +: IN_W];
                wire signed [IN_W-1:0] b_j = b[j*IN_W +: IN_W];
                wire signed [2*IN_W-1:0] product = a_i * b_j;
                wire signed [ACC_W-1:0] bias_j = bias[j*ACC_W +: ACC_W];
                wire signed [ACC_W:0] biased = $signed({{bias_j[ACC_W-1], bias_j}}) + $signed(half);
                /* verilator lint_off UNUSEDSIGNAL */  // the top bit repeats the sign
                wire signed [ACC_W:0] rounded = biased >>> s;
                /* verilator lint_on UNUSEDSIGNAL */
                reg signed [ACC_W-1:0] sum;
                always @(posedge clk) begin
                    if (rst) sum <= {{ACC_W{{1'b0}}}};
                    else if (load) sum <= wipe ? {{ACC_W{{1'b0}}}} : rounded[ACC_W-1:0];
                    else if (en) sum <= sum + {{{{(ACC_W-2*IN_W){{product[2*IN_W-1]}}}}, product}};
                end
                assign acc[(i*COLS+j)*ACC_W +: ACC_W] = sum;
            end
        end
    endgenerate
endmodule
"""


def iexp_verilog(cfg: RtlConfig) -> str:
    """I-BERT's i-exp for x <= 0 at the configured input scale, one element per cycle
    (combinational): z = -q / q_ln2 (integer division), p = q + z q_ln2,
    out = ((p + q_b)^2 + q_c) >> min(z, 31). The constants are `IExp.build`'s."""
    from mfmaccel.hw.intops import IExp
    from mfmaccel.hw.intops.activations import MAX_EXP_SHIFT

    unit = IExp.build(cfg.exp_input_scale)
    return f"""// iexp: exp(q * S) for q <= 0 with S = {cfg.exp_input_scale!r}, as hw.intops.IExp
module iexp #(
    parameter IN_W = {cfg.acc_bits},
    parameter OUT_W = 32,
    parameter signed [IN_W-1:0] Q_LN2 = {unit.q_ln2},
    parameter signed [IN_W-1:0] Q_B = {unit.q_b},
    parameter signed [OUT_W-1:0] Q_C = {unit.q_c}
) (
    input  wire signed [IN_W-1:0] q,
    output wire [OUT_W-1:0] out
);
    localparam W = IN_W + 2;
    wire [W-1:0] minus_q = -{{{{2{{q[IN_W-1]}}}}, q}};
    wire [W-1:0] z = minus_q / {{{{2{{1'b0}}}}, Q_LN2}};
    wire signed [W-1:0] p = {{{{2{{q[IN_W-1]}}}}, q}} + $signed(z) * {{{{2{{1'b0}}}}, Q_LN2}};
    wire signed [2*W-1:0] base = {{{{W{{p[W-1]}}}}, p}} + {{{{(2*W-IN_W){{Q_B[IN_W-1]}}}}, Q_B}};
    wire signed [2*W-1:0] poly = base * base + {{{{(2*W-OUT_W){{Q_C[OUT_W-1]}}}}, Q_C}};
    wire [5:0] shift = (z > {MAX_EXP_SHIFT}) ? 6'd{MAX_EXP_SHIFT} : z[5:0];
    /* verilator lint_off UNUSEDSIGNAL */  // the peak fits OUT_W bits (checked by IExp.build)
    wire signed [2*W-1:0] shifted = poly >>> shift;
    /* verilator lint_on UNUSEDSIGNAL */
    assign out = shifted[OUT_W-1:0];
endmodule
"""


def token_shift_verilog(cfg: RtlConfig) -> str:
    """Per-token power-of-two scaling of one row (combinational), as
    `hw.intops.token_shifts`: the row's largest magnitude, its bit length (a leading-zero
    count), shift = max(0, bits - (OUT_W - 1)), and every lane shifted right by it, rounded
    half up and saturated. The GEMM that takes the row lowers its requantization shift by
    `shift` (the `requant` unit's shift input) and shifts the row's bias the same way."""
    return f"""// token_shift: q = sat((x + 2^(s-1)) >>> s), s = max(0, bitlen(max|x|) - (OUT_W-1))
module token_shift #(
    parameter LANES = {cfg.token_len},
    parameter IN_W = {cfg.acc_bits},
    parameter OUT_W = {cfg.out_bits},
    parameter SHIFT_W = {cfg.shift_bits}
) (
    input  wire [LANES*IN_W-1:0] x,
    output wire [LANES*OUT_W-1:0] q,
    output wire [SHIFT_W-1:0] shift
);
    localparam A_W = IN_W + 1;  // |x| of the most negative input needs one more bit
    reg [A_W-1:0] largest;
    reg [A_W-1:0] magnitude;
    reg [SHIFT_W-1:0] bits;
    integer i;
    always @* begin
        largest = {{{{(A_W-1){{1'b0}}}}, 1'b1}};
        for (i = 0; i < LANES; i = i + 1) begin
            magnitude = x[i*IN_W + IN_W - 1] ? -{{1'b1, x[i*IN_W +: IN_W]}}
                                             : {{1'b0, x[i*IN_W +: IN_W]}};
            if (magnitude > largest) largest = magnitude;
        end
        bits = {{SHIFT_W{{1'b0}}}};
        for (i = 0; i < A_W; i = i + 1)
            if (largest[i]) bits = i[SHIFT_W-1:0] + 1'b1;
    end
    localparam [SHIFT_W-1:0] KEEP = OUT_W - 1;
    assign shift = (bits > KEEP) ? bits - KEEP : {{SHIFT_W{{1'b0}}}};
    wire signed [A_W-1:0] one = {{{{(A_W-1){{1'b0}}}}, 1'b1}};
    wire signed [A_W-1:0] half = (shift == {{SHIFT_W{{1'b0}}}}) ? {{A_W{{1'b0}}}}
                                                             : (one <<< (shift - 1'b1));
    wire signed [A_W-1:0] q_max = (one <<< (OUT_W - 1)) - one;
    wire signed [A_W-1:0] q_min = -(one <<< (OUT_W - 1));
    genvar lane;
    generate
        for (lane = 0; lane < LANES; lane = lane + 1) begin : lanes
            wire signed [A_W-1:0] wide = {{x[lane*IN_W + IN_W - 1], x[lane*IN_W +: IN_W]}};
            wire signed [A_W-1:0] rounded = (wide + half) >>> shift;
            assign q[lane*OUT_W +: OUT_W] = (rounded > q_max) ? q_max[OUT_W-1:0]
                                          : (rounded < q_min) ? q_min[OUT_W-1:0]
                                          : rounded[OUT_W-1:0];
        end
    endgenerate
endmodule
"""

"""The streaming integer LayerNorm and RMSNorm: rows of any length 1..max_row of int24 values,
`stream_lanes` per beat, bit-exact with `intops.ILayerNorm` and `intops.IRMSNorm`.

Two passes over the row and a few per-row scalars in between. Pass 1 takes the beats in,
writes them to the row buffer and sums q and q^2. Then, one at a time on one sequential
divider and one sequential square root: LayerNorm's mean = floor((sum q + n // 2) / n) (a
floor, also for a negative sum), the sum of y^2 for y = q - mean, which is exactly
sum q^2 - 2 mean sum q + n mean^2 (integers: no second pass needed), the variance
floor(sum y^2 / n) + eps, std = max(isqrt(variance), 1) and factor = floor(2^31 / std); RMSNorm
skips the mean and takes floor(sum q^2 / n) + eps. Pass 2 reads the row back with gamma (and
beta) from a parameter memory the host writes per layer (`par_we`, `par_addr`: one beat of
lanes per address), computes (y factor + 2^20) >> 21, times gamma plus beta, and requantizes
(the `requant` unit's arithmetic, widened) to the output width. eps and the dyadic (rq_m,
rq_shift) are ports.
"""

from __future__ import annotations

from mfmaccel.hw.intops.norms import GAMMA_BITS, NORM_BITS, NORM_INPUT
from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.stream_common import (
    beats,
    bits_for,
    divider_verilog,
    drain_output,
    even,
    isqrt_verilog,
    lane_mask,
    low_pad,
    requant_function,
    rowbuf_verilog,
    stream_ports,
    zext,
)

# epsilon at the input's squared scale: an int24 input at a fine scale takes it past 2^32
# (tiny-llama's RMSNorms do); the variance register is 50 bits anyway
EPS_BITS = 48
RECIPROCAL_STEPS = 32  # 2^31 has 32 bits


def norm_widths(cfg: RtlConfig) -> dict[str, int]:
    """Exact widths of every intermediate for rows of up to max_row int24 values."""
    in_w, grow = NORM_INPUT.bits, bits_for(cfg.max_row)
    variance = even(max(2 * in_w, EPS_BITS) + 1)
    normalised = in_w + 1 + 33 - (31 - NORM_BITS) + 1
    return {"in": in_w, "grow": grow, "sum": in_w + grow, "squares": 2 * in_w + grow,
            "var": variance, "root": variance // 2, "norm": normalised,
            "acc": normalised + GAMMA_BITS + 2}


def _stats_cycles(cfg: RtlConfig, *, centred: bool) -> int:
    """Cycles between the passes: a division or root of `steps` bits takes steps + 2 cycles
    (start, steps, result); the mean and the sum of squares each take one more to set up."""
    w = norm_widths(cfg)
    stats = (w["squares"] + 3) + (w["root"] + 2) + (RECIPROCAL_STEPS + 2)
    return stats + ((w["sum"] + 1) + 3 if centred else 0)


def stream_layernorm_cycles(cfg: RtlConfig, length: int) -> int:
    """Cycles from the one taking a row's first beat to the one delivering its last result,
    both counted (input always valid, output always ready): 2 B + 2 + S for B =
    ceil(length / stream_lanes) beats and S = (SUM + 4) + (SQUARES + 3) + (ROOT + 2) + 34
    cycles of per-row scalars (mean, variance, square root, reciprocal, one bit per cycle),
    with SUM = 24 + bits(max_row), SQUARES = 48 + bits(max_row), ROOT = 25: 2 B + 164 at
    max_row = 1024. The next row's first beat is taken in the cycle after."""
    return 2 * beats(length, cfg.stream_lanes) + 2 + _stats_cycles(cfg, centred=True)


def stream_rmsnorm_cycles(cfg: RtlConfig, length: int) -> int:
    """As `stream_layernorm_cycles` without the mean: 2 B + 2 + (SQUARES + 3) + (ROOT + 2) +
    34, i.e. 2 B + 125 at max_row = 1024."""
    return 2 * beats(length, cfg.stream_lanes) + 2 + _stats_cycles(cfg, centred=False)


def stream_layernorm_verilog(cfg: RtlConfig) -> str:
    """The module `stream_layernorm` with its row buffer, parameter memory, divider and root."""
    return _norm_verilog(cfg, centred=True)


def stream_rmsnorm_verilog(cfg: RtlConfig) -> str:
    """The module `stream_rmsnorm` with its row buffer, parameter memory, divider and root."""
    return _norm_verilog(cfg, centred=False)


MEAN_STATES = """                S_MEAN: begin  // mean = floor((sum + n / 2) / n), also below zero
                    centred = {row_sum[SUM_W-1], row_sum} + $signed(HALF_COUNT);
                    negative <= centred[SUM_W];
                    magnitude = centred[SUM_W] ? -centred + COUNT_WIDE - 1'b1 : centred;
                    div_n <= MAGNITUDE_AT_TOP; div_d <= COUNT_D; div_steps <= MEAN_STEPS;
                    div_go <= 1'b1; state <= S_MEAN_W;
                end
                S_MEAN_W: if (!div_go && !div_busy) begin
                    mean <= negative ? -div_quotient[Y_W-1:0] : div_quotient[Y_W-1:0];
                    state <= S_SQ;
                end
"""
SQUARES_CENTRED = """                    // sum (q - mean)^2 = sum q^2 - 2 mean sum q + n mean^2
                    wide = {{(T_W-SQ_W){1'b0}}, sum_squares}
                         - (({{(T_W-Y_W){mean[Y_W-1]}}, mean}
                             * {{(T_W-SUM_W){row_sum[SUM_W-1]}}, row_sum}) <<< 1)
                         + {{(T_W-BW-GROW){1'b0}}, count} * {{(T_W-Y_W){mean[Y_W-1]}}, mean}
                           * {{(T_W-Y_W){mean[Y_W-1]}}, mean};
                    squares = wide[SQ_W-1:0];
"""
STATS_STATES = """                S_SQ: begin
{squares}                    div_n <= SQUARES_AT_TOP; div_d <= COUNT_D; div_steps <= SQ_STEPS;
                    div_go <= 1'b1; state <= S_VAR_W;
                end
                S_VAR_W: if (!div_go && !div_busy) begin  // variance = floor(squares / n) + eps
                    variance <= div_quotient[VAR_W-1:0] + {{(VAR_W-EPS_W){1'b0}}, eps};
                    root_go <= 1'b1; state <= S_ROOT_W;
                end
                S_ROOT_W: if (!root_go && !root_busy) begin  // factor = floor(2^31 / std)
                    div_n <= ONE_AT_TOP; div_steps <= RECIP_STEPS; div_go <= 1'b1;
                    div_d <= (root == {ROOT_W{1'b0}}) ? ONE_D : ROOT_D;
                    state <= S_RECIP_W;
                end
                S_RECIP_W: if (!div_go && !div_busy) begin
                    factor <= div_quotient[31:0];
                    state <= S_OUT; next_read <= {BW{1'b0}}; fetched <= 1'b0;
                end
"""


def _substitutions(cfg: RtlConfig, n_w: int, d_w: int) -> dict[str, str]:
    """Operands extended to the divider's widths (no zero-width replications)."""
    w = norm_widths(cfg)
    count_w = bits_for(beats(cfg.max_row, cfg.stream_lanes)) + bits_for(cfg.stream_lanes)
    return {"HALF_COUNT": zext("(count >> 1)", count_w, w["sum"] + 1),
            "COUNT_WIDE": zext("count", count_w, w["sum"] + 1),
            "COUNT_D": zext("count", count_w, d_w),
            "ROOT_D": zext("root", w["root"], d_w),
            "ONE_D": zext("1'b1", 1, d_w),
            "MAGNITUDE_AT_TOP": low_pad("magnitude", w["sum"] + 1, n_w),
            "SQUARES_AT_TOP": low_pad("squares", w["squares"], n_w),
            "ONE_AT_TOP": low_pad("32'h80000000", RECIPROCAL_STEPS, n_w)}


def _states(cfg: RtlConfig, n_w: int, d_w: int, *, centred: bool) -> str:
    text = (MEAN_STATES if centred else "") + STATS_STATES.replace(
        "{squares}", SQUARES_CENTRED if centred else "                    squares = sum_squares;\n")
    for key, value in _substitutions(cfg, n_w, d_w).items():
        text = text.replace(key, value)
    return text


def _norm_verilog(cfg: RtlConfig, *, centred: bool) -> str:
    name = "stream_layernorm" if centred else "stream_rmsnorm"
    w = norm_widths(cfg)
    lanes, out_w = cfg.stream_lanes, cfg.out_bits if centred else cfg.rmsnorm_out_bits
    depth = beats(cfg.max_row, lanes)
    aw, bw, cw = bits_for(depth - 1), bits_for(depth), bits_for(lanes)
    n_w = max(w["sum"] + 1, w["squares"], RECIPROCAL_STEPS)
    d_w = max(bw + bits_for(lanes), w["root"])
    states = ("S_IN", *(("S_MEAN", "S_MEAN_W") if centred else ()), "S_SQ", "S_VAR_W",
              "S_ROOT_W", "S_RECIP_W", "S_OUT")
    state_list = ", ".join(f"{s} = 3'd{i}" for i, s in enumerate(states))
    golden = "ILayerNorm" if centred else "IRMSNorm"
    t_w = "T_W = SQ_W + IN_W + 4, " if centred else ""
    states_text = _states(cfg, n_w, d_w, centred=centred)
    mean_steps = "MEAN_STEPS = SUM_W + 1, " if centred else ""
    masks = (lane_mask("in_used", last="in_last", count="in_count", lanes=lanes)
             + lane_mask("out_used", last="fetched_last", count="last_count", lanes=lanes))
    requantize = requant_function("requantize", acc_w=w["acc"], m_w=cfg.multiplier_bits,
                                  shift_w=cfg.shift_bits, out_w=out_w)
    what = ("requant((y * floor(2^31 / isqrt(var + eps)) >> 21) * gamma + beta), "
            "y = q - mean" if centred else
            "requant((q * floor(2^31 / isqrt(mean(q^2) + eps)) >> 21) * gamma)")
    written = "gamma and beta" if centred else "gamma"
    ports = (f"""    input  wire par_we,               // {written} of beat par_addr
    input  wire [{aw - 1}:0] par_addr,
    input  wire [LANES*GAMMA_W-1:0] par_gamma,  // {lanes} signed int{GAMMA_BITS}
""" + ("    input  wire [LANES*32-1:0] par_beta,       // int32 beta\n" if centred else "") +
             f"""    input  wire [EPS_W-1:0] eps,      // epsilon at the input's squared scale
    input  wire [{cfg.multiplier_bits - 1}:0] rq_m,
    input  wire [{cfg.shift_bits - 1}:0] rq_shift""")
    centred_regs = ("""    reg signed [Y_W-1:0] mean;
    reg negative;
""" if centred else "")
    centred_temps = ("""        reg signed [SUM_W:0] centred;
        reg [SUM_W:0] magnitude;
        /* verilator lint_off UNUSEDSIGNAL */  // the sum of squares about the mean fits SQ_W bits
        reg signed [T_W-1:0] wide;
        /* verilator lint_on UNUSEDSIGNAL */
""" if centred else "")
    y = "{x[IN_W-1], x} - mean" if centred else "{x[IN_W-1], x}"
    beta = ("{{(ACC_W-32){stored_par[LANES*GAMMA_W + k*32 + 31]}}, "
            "stored_par[LANES*GAMMA_W + k*32 +: 32]}" if centred else "{ACC_W{1'b0}}")
    return f"""// {name}: {what}
// over rows of 1..{cfg.max_row} int{w["in"]} values, {lanes} per beat, as hw.intops.{golden};
// two passes over the row buffer with the per-row scalars between them
module {name} (
{stream_ports("LANES*IN_W", "LANES*OUT_W", cw)},
{ports}
);
    localparam LANES = {lanes}, IN_W = {w["in"]}, OUT_W = {out_w}, GAMMA_W = {GAMMA_BITS};
    localparam DEPTH = {depth}, AW = {aw}, BW = {bw}, CW = {cw}, GROW = {bits_for(lanes)};
    localparam SUM_W = {w["sum"]}, SQ_W = {w["squares"]}, VAR_W = {w["var"]};
    localparam ROOT_W = {w["root"]}, NORM_W = {w["norm"]}, ACC_W = {w["acc"]}, EPS_W = {EPS_BITS};
    localparam Y_W = IN_W + 1, P_W = Y_W + 33, PAR_W = {GAMMA_BITS + (32 if centred else 0)};
    localparam {t_w}N_W = {n_w}, D_W = {d_w}, DS_W = {bits_for(n_w)};
    localparam [DS_W-1:0] {mean_steps}SQ_STEPS = SQ_W, RECIP_STEPS = {RECIPROCAL_STEPS};
    localparam [2:0] {state_list};
    localparam [CW-1:0] FULL = LANES;
    localparam signed [P_W-1:0] ROUND = {1 << (30 - NORM_BITS)};
    reg [2:0] state;
    reg [BW-1:0] taken;
    reg [CW-1:0] last_count;
    reg signed [SUM_W-1:0] row_sum;
    reg [SQ_W-1:0] sum_squares;
{centred_regs}    reg [VAR_W-1:0] variance;
    reg [31:0] factor;
    reg [BW-1:0] next_read;
    reg fetched;
    reg [BW-1:0] fetched_beat;
    reg div_go, root_go;
    reg [N_W-1:0] div_n;
    reg [D_W-1:0] div_d;
    reg [DS_W-1:0] div_steps;
    wire div_busy, root_busy;
    /* verilator lint_off UNUSEDSIGNAL */  // each quotient fits the low bits
    wire [N_W-1:0] div_quotient;
    /* verilator lint_on UNUSEDSIGNAL */
    wire [ROOT_W-1:0] root;
    wire [LANES*IN_W-1:0] stored;
    wire [LANES*PAR_W-1:0] stored_par;

    assign in_ready = state == S_IN;
    wire take = in_valid && in_ready;
    wire advance = state == S_OUT && (!out_valid || out_ready);
    wire read = advance && next_read < taken;
    wire fetched_last = fetched_beat + 1'b1 == taken;
    // elements in the row: full beats, then the last one's count
    wire [BW+GROW-1:0] count = {{{{GROW{{1'b0}}}}, taken - 1'b1}} * FULL_COUNT
                             + {zext("last_count", cw, bw + bits_for(lanes))};
    localparam [BW+GROW-1:0] FULL_COUNT = LANES;

    {name}_rowbuf #(.WIDTH(LANES*IN_W), .DEPTH(DEPTH), .AW(AW)) row (
        .clk(clk), .we(take), .waddr(taken[AW-1:0]), .wdata(in_data),
        .re(read), .raddr(next_read[AW-1:0]), .rdata(stored)
    );
    {name}_rowbuf #(.WIDTH(LANES*PAR_W), .DEPTH(DEPTH), .AW(AW)) parameters (
        .clk(clk), .we(par_we && state == S_IN), .waddr(par_addr),
        .wdata({{{"par_beta, " if centred else ""}par_gamma}}),
        .re(read), .raddr(next_read[AW-1:0]), .rdata(stored_par)
    );
    {name}_divider #(.N_W(N_W), .D_W(D_W), .S_W(DS_W)) divider (
        .clk(clk), .rst(rst), .start(div_go), .dividend(div_n), .divisor(div_d),
        .steps(div_steps), .busy(div_busy), .quotient(div_quotient)
    );
    {name}_isqrt #(.W(VAR_W), .S_W({bits_for(w["root"])})) square_root (
        .clk(clk), .rst(rst), .start(root_go), .n(variance), .busy(root_busy), .root(root)
    );
{masks}{requantize}
    always @(posedge clk) begin : step
        reg signed [IN_W-1:0] x;
        reg signed [SUM_W-1:0] beat_sum;
        reg [SQ_W-1:0] beat_squares, squares;
        reg signed [2*IN_W-1:0] x_wide;
{centred_temps}        reg signed [Y_W-1:0] y;
        /* verilator lint_off UNUSEDSIGNAL */  // the shift leaves the low bits behind
        reg signed [P_W-1:0] scaled;
        /* verilator lint_on UNUSEDSIGNAL */
        reg signed [NORM_W-1:0] normalised;
        reg signed [GAMMA_W-1:0] g;
        reg signed [ACC_W-1:0] acc;
        reg [LANES*OUT_W-1:0] results;
        integer k;
        div_go <= 1'b0; root_go <= 1'b0;
        if (rst) begin
            state <= S_IN; taken <= {{BW{{1'b0}}}}; out_valid <= 1'b0; fetched <= 1'b0;
        end else begin
            case (state)
                S_IN: if (take) begin  // pass 1: sum q and q^2 over the lanes in use
                    beat_sum = {{SUM_W{{1'b0}}}}; beat_squares = {{SQ_W{{1'b0}}}};
                    for (k = 0; k < LANES; k = k + 1) begin
                        x = in_used[k] ? in_data[k*IN_W +: IN_W] : {{IN_W{{1'b0}}}};
                        x_wide = {{{{IN_W{{x[IN_W-1]}}}}, x}};
                        beat_sum = beat_sum + {{{{(SUM_W-IN_W){{x[IN_W-1]}}}}, x}};
                        beat_squares = beat_squares
                                     + {{{{(SQ_W-2*IN_W){{1'b0}}}}, x_wide * x_wide}};
                    end
                    row_sum <= (taken == {{BW{{1'b0}}}}) ? beat_sum : row_sum + beat_sum;
                    sum_squares <= (taken == {{BW{{1'b0}}}}) ? beat_squares
                                                           : sum_squares + beat_squares;
                    taken <= taken + 1'b1;
                    if (in_last) begin last_count <= in_count; state <= {states[1]}; end
                end
{states_text}                default: begin  // S_OUT, pass 2: normalise, affine, requantize
                    if (advance) begin
                        for (k = 0; k < LANES; k = k + 1) begin
                            x = stored[k*IN_W +: IN_W];
                            y = {y};
                            scaled = {{{{(P_W-Y_W){{y[Y_W-1]}}}}, y}}
                                   * {{{{(P_W-32){{1'b0}}}}, factor}} + ROUND;
                            scaled = scaled >>> {31 - NORM_BITS};  // signed: arithmetic
                            normalised = scaled[NORM_W-1:0];
                            g = stored_par[k*GAMMA_W +: GAMMA_W];
                            acc = {{{{(ACC_W-NORM_W){{normalised[NORM_W-1]}}}}, normalised}}
                                * {{{{(ACC_W-GAMMA_W){{g[GAMMA_W-1]}}}}, g}} + {beta};
                            results[k*OUT_W +: OUT_W] = out_used[k]
                                ? requantize(acc, rq_m, rq_shift) : {{OUT_W{{1'b0}}}};
                        end
{drain_output('results')}""" + (rowbuf_verilog(name) + divider_verilog(name)
                                        + isqrt_verilog(name))

"""The streaming attention tile: softmax(scores) x V for one query row, one key per beat, a
tile of keys at a time with only per-row state, bit-exact with
`intops.online_softmax.tiled_attention`.

A beat carries one key: its int32 score (at the i-exp's input scale) and its row of v
(`attn_head_dim` int8 values). The unit keeps the running maximum m, the running exp sum l and
the unnormalised accumulator acc (one value per v column) and works through the keys in tiles
of `attn_tile`, as the golden model does: it takes a tile into the tile buffer (keeping the
tile's maximum), rescales l and acc by r = i-exp(m - new m) (floor(old r / peak), i-exp's
peak being 1.0; an identity where the maximum did not rise, and nothing to rescale on the first
tile), then reads the tile back, adding e = i-exp(s - m) to l and e v to acc. After the last
tile it delivers floor(acc 2^softmax_bits / l), `stream_lanes` columns per beat. The score row
never has to be on chip: the state is the tile buffer plus 2 + D registers, whatever the
number of keys (up to max_row, which sizes l and acc).
"""

from __future__ import annotations

from mfmaccel.hw.intops import IExp
from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.stream_common import beats, bits_for, iexp_function, rowbuf_verilog


def attention_out_bits(cfg: RtlConfig) -> int:
    """Signed bits of a context value: |acc / l| is within a v step of 2^(in_bits - 1), times
    2^softmax_bits."""
    return cfg.in_bits + cfg.softmax_bits + 2


def stream_attention_cycles(cfg: RtlConfig, keys: int) -> int:
    """Cycles from the one taking a query row's first key to the one delivering its last
    context beat, both counted (input always valid, output always ready):
    2 S + T (G + 1) + G + 1 for S keys in T = ceil(S / attn_tile) tiles and G = attn_head_dim /
    stream_lanes: per tile, one cycle per key to take it in, G to rescale the accumulator
    (G lanes of it a cycle), one per key plus one to accumulate; then G + 1 to divide and
    deliver. The next query row's first key is taken in the cycle after."""
    groups = cfg.attn_head_dim // cfg.stream_lanes
    tiles = beats(keys, cfg.attn_tile)
    return 2 * keys + tiles * (groups + 1) + groups + 1


def stream_attention_verilog(cfg: RtlConfig) -> str:
    """The module `stream_attention` with its tile buffer."""
    exp = IExp.build(cfg.exp_input_scale)
    lanes, d, tile, v_w = cfg.stream_lanes, cfg.attn_head_dim, cfg.attn_tile, cfg.in_bits
    grow = bits_for(cfg.max_row)
    groups = d // lanes
    sum_w, acc_w, out_w = 32 + grow, 40 + grow, attention_out_bits(cfg)
    kw, gw, cw = bits_for(tile), bits_for(groups), bits_for(lanes)
    return f"""// stream_attention: softmax(s) x V for one query row, as
// hw.intops.online_softmax.tiled_attention (tile {tile}, i-exp at input scale
// {cfg.exp_input_scale!r}): one key (score, {d} int{v_w} v) per beat, running max / sum /
// accumulator rescaled between tiles; 2 S + T ({groups} + 1) + {groups} + 1 cycles
module stream_attention (
    input  wire clk,
    input  wire rst,
    input  wire in_valid,
    output wire in_ready,
    input  wire [IN_W-1:0] in_score,
    input  wire [D*V_W-1:0] in_v,
    input  wire in_last,
    output reg  out_valid,
    input  wire out_ready,
    output reg  [LANES*OUT_W-1:0] out_data,   // context columns, scale 2^-{cfg.softmax_bits} of v's
    output reg  [{cw - 1}:0] out_count,
    output reg  out_last
);
    localparam LANES = {lanes}, D = {d}, TILE = {tile}, V_W = {v_w}, IN_W = {cfg.acc_bits};
    localparam SUM_W = {sum_w}, ACC_W = {acc_w}, OUT_W = {out_w}, K = {cfg.softmax_bits};
    localparam GROUPS = {groups}, KW = {kw}, GW = {gw}, CW = {cw}, E_W = IN_W + D * V_W;
    localparam [31:0] PEAK = {exp.peak};
    localparam [ACC_W+32:0] PEAK_WIDE = {exp.peak};
    localparam [KW-1:0] TILE_KEYS = TILE;
    localparam [GW-1:0] LAST_GROUP = GROUPS - 1;
    localparam [CW-1:0] FULL = LANES;
    localparam [2:0] S_LOAD = 3'd0, S_RESCALE = 3'd1, S_ACCUM = 3'd2, S_OUT = 3'd3;
    reg [2:0] state;
    reg [KW-1:0] keys;           // keys of the current tile taken
    reg first, last_tile;
    reg signed [IN_W-1:0] m, tile_max;
    reg [SUM_W-1:0] l;
    reg signed [ACC_W-1:0] acc [0:D-1];
    reg [GW-1:0] group;
    reg [KW-1:0] next_read;
    reg fetched;
    reg [KW-1:0] fetched_key;
    wire [E_W-1:0] entry;

    assign in_ready = state == S_LOAD;
    wire take = in_valid && in_ready;
    wire read = state == S_ACCUM && next_read < keys;
    wire signed [IN_W-1:0] new_m = (first || tile_max > m) ? tile_max : m;
    wire advance = !out_valid || out_ready;

    stream_attention_rowbuf #(.WIDTH(E_W), .DEPTH(TILE), .AW({bits_for(tile - 1)})) tile_buffer (
        .clk(clk), .we(take), .waddr(keys[{bits_for(tile - 1) - 1}:0]), .wdata({{in_v, in_score}}),
        .re(read), .raddr(next_read[{bits_for(tile - 1) - 1}:0]), .rdata(entry)
    );
{iexp_function("iexp", cfg.acc_bits + 1, exp)}
    // floor(x r / PEAK) for 0 <= r <= PEAK, also for a negative x
    function signed [ACC_W-1:0] rescale;
        input signed [ACC_W-1:0] x;
        input [31:0] r;
        reg [ACC_W+32:0] product;
        /* verilator lint_off UNUSEDSIGNAL */  // r <= PEAK: the quotient fits ACC_W bits
        reg [ACC_W+32:0] quotient;
        /* verilator lint_on UNUSEDSIGNAL */
        begin
            product = {{{{33{{x[ACC_W-1]}}}}, x}} * {{{{(ACC_W+1){{1'b0}}}}, r}};
            if (x[ACC_W-1]) begin
                quotient = (-product + PEAK_WIDE - 1'b1) / PEAK_WIDE;
                rescale = -quotient[ACC_W-1:0];
            end else begin
                quotient = product / PEAK_WIDE;
                rescale = quotient[ACC_W-1:0];
            end
        end
    endfunction

    // floor(x 2^K / l), also for a negative x
    function [OUT_W-1:0] divide_by_sum;
        input signed [ACC_W-1:0] x;
        input [SUM_W-1:0] total;
        reg [ACC_W+K-1:0] magnitude;
        /* verilator lint_off UNUSEDSIGNAL */  // |x| / l <= 2^(V_W-1) + 1: OUT_W bits
        reg [ACC_W+K-1:0] quotient;
        /* verilator lint_on UNUSEDSIGNAL */
        begin
            magnitude = x[ACC_W-1] ? -{{x, {{K{{1'b0}}}}}} : {{x, {{K{{1'b0}}}}}};
            if (x[ACC_W-1]) begin
                quotient = (magnitude + {{{{(ACC_W+K-SUM_W){{1'b0}}}}, total}} - 1'b1)
                         / {{{{(ACC_W+K-SUM_W){{1'b0}}}}, total}};
                divide_by_sum = -quotient[OUT_W-1:0];
            end else begin
                quotient = magnitude / {{{{(ACC_W+K-SUM_W){{1'b0}}}}, total}};
                divide_by_sum = quotient[OUT_W-1:0];
            end
        end
    endfunction

    always @(posedge clk) begin : step
        reg [31:0] r, e;
        /* verilator lint_off UNUSEDSIGNAL */  // l stays within SUM_W bits
        reg signed [ACC_W-1:0] rescaled;
        /* verilator lint_on UNUSEDSIGNAL */
        reg signed [IN_W-1:0] s;
        reg signed [IN_W:0] exponent;
        reg signed [V_W-1:0] v;
        reg [LANES*OUT_W-1:0] results;
        integer k;
        // one i-exp: exp(m - new m) while rescaling, exp(s - m) while accumulating
        s = entry[IN_W-1:0];
        exponent = (state == S_RESCALE) ? {{m[IN_W-1], m}} - {{new_m[IN_W-1], new_m}}
                                        : {{s[IN_W-1], s}} - {{m[IN_W-1], m}};
        e = (state == S_RESCALE || state == S_ACCUM) ? iexp(exponent) : 32'd0;
        if (rst) begin
            state <= S_LOAD; keys <= {{KW{{1'b0}}}}; first <= 1'b1; last_tile <= 1'b0;
            out_valid <= 1'b0; out_last <= 1'b0; fetched <= 1'b0; l <= {{SUM_W{{1'b0}}}};
            for (k = 0; k < D; k = k + 1) acc[k] <= {{ACC_W{{1'b0}}}};
        end else begin
            case (state)
                S_LOAD: if (take) begin  // a tile into the tile buffer, and its maximum
                    if (keys == {{KW{{1'b0}}}} || $signed(in_score) > tile_max)
                        tile_max <= in_score;
                    keys <= keys + 1'b1;
                    if (in_last) last_tile <= 1'b1;
                    if (in_last || keys + 1'b1 == TILE_KEYS) begin
                        state <= S_RESCALE; group <= {{GW{{1'b0}}}};
                    end
                end
                S_RESCALE: begin  // l, acc *= i-exp(m - new m) / peak, LANES columns a cycle
                    r = first ? PEAK : e;
                    rescaled = rescale({{{{(ACC_W-SUM_W){{1'b0}}}}, l}}, r);
                    if (group == {{GW{{1'b0}}}}) l <= rescaled[SUM_W-1:0];
                    for (k = 0; k < LANES; k = k + 1)
                        acc[group * LANES + k] <= rescale(acc[group * LANES + k], r);
                    group <= group + 1'b1;
                    if (group == LAST_GROUP) begin
                        m <= new_m; first <= 1'b0; state <= S_ACCUM;
                        next_read <= {{KW{{1'b0}}}}; fetched <= 1'b0;
                    end
                end
                S_ACCUM: begin  // l += e, acc += e v for each key of the tile
                    if (read) next_read <= next_read + 1'b1;
                    fetched <= read; fetched_key <= next_read;
                    if (fetched) begin

                        l <= l + {{{{(SUM_W-32){{1'b0}}}}, e}};
                        for (k = 0; k < D; k = k + 1) begin
                            v = entry[IN_W + k*V_W +: V_W];
                            acc[k] <= acc[k] + {{{{(ACC_W-32){{1'b0}}}}, e}}
                                             * {{{{(ACC_W-V_W){{v[V_W-1]}}}}, v}};
                        end
                        if (fetched_key + 1'b1 == keys) begin
                            keys <= {{KW{{1'b0}}}};
                            if (last_tile) begin state <= S_OUT; group <= {{GW{{1'b0}}}}; end
                            else state <= S_LOAD;
                        end
                    end
                end
                default: begin  // S_OUT: context = floor(acc 2^K / l), LANES columns a beat
                    if (advance && !(out_valid && out_last)) begin
                        for (k = 0; k < LANES; k = k + 1)
                            results[k*OUT_W +: OUT_W] = divide_by_sum(acc[group * LANES + k], l);
                        out_valid <= 1'b1;
                        out_data <= results;
                        out_last <= group == LAST_GROUP;
                        out_count <= FULL;
                        group <= group + 1'b1;
                    end
                    if (out_valid && out_ready && out_last) begin  // the row is out: start afresh
                        state <= S_LOAD; first <= 1'b1; last_tile <= 1'b0; out_valid <= 1'b0;
                        out_last <= 1'b0; l <= {{SUM_W{{1'b0}}}};
                        for (k = 0; k < D; k = k + 1) acc[k] <= {{ACC_W{{1'b0}}}};
                    end
                end
            endcase
        end
    end
endmodule
""" + rowbuf_verilog("stream_attention")

"""The GEMM engine: a controller that runs a whole tiled int8 GEMM + bias + requantization out of
on-chip buffers, on the `mac_array` and `requant` units.

The host writes A (M x K, row-major), B (K x N, row-major), the int32 bias (N), the dyadic
multiplier of each output channel (N: per-channel weight scales, `intops.DyadicVector`) and a
shift per row of A (M) through one write port, sets M, N, K and the shared requantization
shift, and pulses `start`. The row shifts are the per-token power-of-two scales of A
(`intops.token_shifts`; all zero for a static scale): row i's bias loads shifted right by
s_i, and its outputs are requantized with the shift lowered by s_i (`intops.int_gemm` and
`intops.requantize` with `row_shift`); the host keeps every s_i below the requantization
shift, as the conversion does. For every output tile of ROWS x COLS the controller spends 1
cycle loading the bias into the accumulators, K cycles of rank-1 updates, and ROWS cycles
requantizing one accumulator row per cycle (COLS `requant` units) into the output buffer;
edge tiles are padded with zeros and their extra outputs dropped. With `b_banks` = 2 (the
accelerator top) B, the bias and the multipliers are kept in two banks: a run reads the bank
`run_bank` names at its start, and the host may write the other bank (`wr_bank`) while it
runs, so the next output chunk's weights load behind the current chunk's compute. No cycle
depends on the data: the latency is the performance model's output-stationary count
(`hw.dataflow.os_cycles`) on this engine's architecture (`gemm_arch`), and the testbench
holds the simulation to it exactly.
"""

from __future__ import annotations

from mfmaccel.hw.arch import KIB, Arch
from mfmaccel.hw.dataflow import PSUM_BYTES, os_cycles
from mfmaccel.hw.rtl.config import RtlConfig

BUFFER_A, BUFFER_B, BUFFER_BIAS, BUFFER_SHIFT, BUFFER_M = 0, 1, 2, 3, 4  # `wr_sel` values


def gemm_arch(cfg: RtlConfig, clock_mhz: float = 100) -> Arch:
    """The engine as the performance model sees it: a broadcast output-stationary array with
    buffers of max_m x max_k (A), max_k x max_n (B) and the output tile's partial sums; the
    host fills the buffers, so the link is never the bottleneck for a GEMM that fits."""
    return Arch("rtl", rows=cfg.rows, cols=cfg.cols,
                a_buffer_kib=cfg.max_m * cfg.max_k / KIB, b_buffer_kib=cfg.max_k * cfg.max_n / KIB,
                out_buffer_kib=max(cfg.max_m * cfg.max_n, cfg.rows * cfg.cols) * PSUM_BYTES / KIB,
                bandwidth_gbs=1e6, clock_mhz=clock_mhz, dataflows=("os",),
                notes=f"the generated GEMM engine ({cfg.rows}x{cfg.cols})")


def gemm_cycles(cfg: RtlConfig, m: int, n: int, k: int) -> int:
    """Clock edges from the one that takes `start` to the one after which `done` is high and
    the output buffer complete, for an (m x k) @ (k x n) GEMM: the start edge, then per tile
    bias load + k rank-1 updates + one requantized row per cycle (the performance model)."""
    return os_cycles(gemm_arch(cfg), m, n, k)


def _bits(value: int) -> int:
    """Bits of an unsigned number that must hold 0..value."""
    return max(1, value.bit_length())


def _fit(expr: str, width: int, target: int) -> str:
    """`expr` (unsigned, `width` bits) zero-extended to `target` bits."""
    return expr if width == target else f"{{{{{target - width}{{1'b0}}}}, {expr}}}"


def gemm_verilog(cfg: RtlConfig) -> str:
    """The controller module `gemm`; instantiates `mac_array` and `requant` (their files).

    Widths are worked out here for this configuration, so every index is exactly as wide as
    the buffer it addresses (the module's constants are localparams, not overridable)."""
    dim = _bits(max(cfg.max_m, cfg.max_n, cfg.max_k))  # holds M, N, K
    a_aw, b_aw = _bits(cfg.max_m * cfg.max_k - 1), _bits(cfg.max_k * cfg.max_n - 1)
    n_aw, o_aw = _bits(cfg.max_n - 1), _bits(cfg.max_m * cfg.max_n - 1)
    m_aw = _bits(cfg.max_m - 1)
    addr = max(a_aw, b_aw, n_aw, m_aw)
    ext = dim + 1  # tile origin + lane offset
    wide = max(a_aw, b_aw, o_aw, ext) + 1
    lane = _bits(max(cfg.rows, cfg.cols))

    def w(expr: str, width: int) -> str:  # to the common arithmetic width
        return _fit(expr, width, wide)

    banked = cfg.b_banks == 2  # B, bias and multipliers in two banks (see the docstring)
    bank_dim, wr_bank, rd_bank = ("[0:1]", "[wr_bank]", "[bank]") if banked else ("", "", "")
    bank_ports = ("    input  wire run_bank,   // the bank of B, bias and multipliers a run reads\n"
                  "    input  wire wr_bank,    // the bank they are written into, at any time\n"
                  if banked else "")
    writable = ("state == IDLE || wr_sel == 3'd1 || wr_sel == 3'd2 || wr_sel == 3'd4"
                if banked else "state == IDLE")
    bank_reg = "    reg bank;\n" if banked else ""
    bank_latch = "bank <= run_bank;" if banked else "// one bank"

    return f"""// gemm: out = requant(A @ B + bias), A (M x K) and B (K x N) in on-chip buffers;
// tiles of ROWS x COLS on mac_array; latency (1 + K + ROWS) cycles per tile, data-independent.
// Generated for one configuration (mfmaccel.hw.rtl.gemm): the constants are localparams.
module gemm (
    input  wire clk,
    input  wire rst,
    input  wire wr_en,
    input  wire [2:0] wr_sel,  // 0: A at i*{cfg.max_k}+k, 1: B at k*{cfg.max_n}+j, 2: bias at j,
                               // 3: row i's shift at i, 4: channel j's multiplier at j
    input  wire [{addr - 1}:0] wr_addr,
    input  wire [{cfg.acc_bits - 1}:0] wr_data,       // int8 operands in the low {cfg.in_bits} bits
{bank_ports}    input  wire [{dim - 1}:0] dim_m,          // 1..{cfg.max_m}
    input  wire [{dim - 1}:0] dim_n,          // 1..{cfg.max_n}
    input  wire [{dim - 1}:0] dim_k,          // 1..{cfg.max_k}
    input  wire [{cfg.shift_bits - 1}:0] rq_shift,
    input  wire start,
    output wire busy,
    output reg  done,
    output reg  [31:0] cycles,       // edges from the one taking start to done (last run)
    input  wire [{o_aw - 1}:0] rd_addr,       // out at i*{cfg.max_n}+j
    output wire [{cfg.out_bits - 1}:0] rd_data
);
    localparam ROWS = {cfg.rows}, COLS = {cfg.cols}, IN_W = {cfg.in_bits}, ACC_W = {cfg.acc_bits};
    localparam OUT_W = {cfg.out_bits}, WIDE = {wide}, SHIFT_W = {cfg.shift_bits};
    localparam IDLE = 2'd0, LOAD = 2'd1, MAC = 2'd2, WRITE = 2'd3;
    localparam [WIDE-1:0] STRIDE_K = {cfg.max_k}, STRIDE_N = {cfg.max_n};
    reg [1:0] state;
    reg signed [IN_W-1:0] a_mem [0:{cfg.max_m * cfg.max_k - 1}];
    reg signed [IN_W-1:0] b_mem {bank_dim}[0:{cfg.max_k * cfg.max_n - 1}];
    reg signed [ACC_W-1:0] bias_mem {bank_dim}[0:{cfg.max_n - 1}];
    reg [{cfg.multiplier_bits - 1}:0] m_mem {bank_dim}[0:{cfg.max_n - 1}];
{bank_reg}    reg [SHIFT_W-1:0] shift_mem [0:{cfg.max_m - 1}];
    reg signed [OUT_W-1:0] out_mem [0:{cfg.max_m * cfg.max_n - 1}];
    reg [{dim - 1}:0] tile_i, tile_j, step;  // tile origin, k
    reg [{lane - 1}:0] row;                  // accumulator row being requantized

    /* verilator lint_off UNUSEDSIGNAL */  // operands use the low bits of wr_data and wr_addr
    always @(posedge clk) begin
        if (wr_en && ({writable})) begin
            if (wr_sel == 3'd0) a_mem[wr_addr[{a_aw - 1}:0]] <= wr_data[IN_W-1:0];
            else if (wr_sel == 3'd1) b_mem{wr_bank}[wr_addr[{b_aw - 1}:0]] <= wr_data[IN_W-1:0];
            else if (wr_sel == 3'd2) bias_mem{wr_bank}[wr_addr[{n_aw - 1}:0]] <= wr_data;
            else if (wr_sel == 3'd4)
                m_mem{wr_bank}[wr_addr[{n_aw - 1}:0]] <= wr_data[{cfg.multiplier_bits - 1}:0];
            else shift_mem[wr_addr[{m_aw - 1}:0]] <= wr_data[SHIFT_W-1:0];
        end
    end

    wire [ROWS*IN_W-1:0] a_bus;
    wire [COLS*IN_W-1:0] b_bus;
    wire [COLS*ACC_W-1:0] bias_bus;
    wire [ROWS*SHIFT_W-1:0] shift_bus;
    wire [ROWS*COLS*ACC_W-1:0] acc;
    wire [WIDE-1:0] m_wide = {w("dim_m", dim)}, n_wide = {w("dim_n", dim)};
    wire [WIDE-1:0] k_wide = {w("step", dim)};
    genvar r, c;
    generate
        for (r = 0; r < ROWS; r = r + 1) begin : a_lane
            wire [WIDE-1:0] i = {w("tile_i", dim)} + r;
            wire [WIDE-1:0] addr = i * STRIDE_K + k_wide;
            assign a_bus[r*IN_W +: IN_W] = (i < m_wide) ? a_mem[addr[{a_aw - 1}:0]]
                                                        : {{IN_W{{1'b0}}}};
            assign shift_bus[r*SHIFT_W +: SHIFT_W] = (i < m_wide) ? shift_mem[i[{m_aw - 1}:0]]
                                                                  : {{SHIFT_W{{1'b0}}}};
        end
        for (c = 0; c < COLS; c = c + 1) begin : b_lane
            wire [WIDE-1:0] j = {w("tile_j", dim)} + c;
            wire [WIDE-1:0] addr = k_wide * STRIDE_N + j;
            wire in_n = j < n_wide;
            assign b_bus[c*IN_W +: IN_W] = in_n ? b_mem{rd_bank}[addr[{b_aw - 1}:0]]
                                                : {{IN_W{{1'b0}}}};
            assign bias_bus[c*ACC_W +: ACC_W] = in_n ? bias_mem{rd_bank}[j[{n_aw - 1}:0]]
                                                     : {{ACC_W{{1'b0}}}};
        end
    endgenerate

    mac_array #(.ROWS(ROWS), .COLS(COLS), .IN_W(IN_W), .ACC_W(ACC_W), .SHIFT_W(SHIFT_W)) array (
        .clk(clk), .rst(rst), .load(state == LOAD), .en(state == MAC),
        .a(a_bus), .b(b_bus), .bias(bias_bus), .bias_shift(shift_bus), .acc(acc)
    );

    wire [WIDE-1:0] out_i = {w("tile_i", dim)} + {w("row", lane)};
    // the row being requantized: its shift lowers the requantization shift
    wire [SHIFT_W-1:0] row_shift = (out_i < m_wide) ? shift_mem[out_i[{m_aw - 1}:0]]
                                                    : {{SHIFT_W{{1'b0}}}};
    wire [SHIFT_W-1:0] out_shift = rq_shift - row_shift;
    generate
        for (c = 0; c < COLS; c = c + 1) begin : requant_lane
            wire [OUT_W-1:0] q;
            wire [WIDE-1:0] j = {w("tile_j", dim)} + c;
            wire [{cfg.multiplier_bits - 1}:0] m = (j < n_wide) ? m_mem{rd_bank}[j[{n_aw - 1}:0]]
                                                           : {{{cfg.multiplier_bits}{{1'b0}}}};
            requant #(.ACC_W(ACC_W), .M_W({cfg.multiplier_bits}), .SHIFT_W({cfg.shift_bits}),
                      .OUT_W(OUT_W)) unit (
                .acc(acc[({w("row", lane)} * COLS + c) * ACC_W +: ACC_W]), .m(m),
                .shift(out_shift), .q(q)
            );
            wire [WIDE-1:0] addr = out_i * STRIDE_N + j;
            always @(posedge clk) begin
                if (state == WRITE && out_i < m_wide && j < n_wide)
                    out_mem[addr[{o_aw - 1}:0]] <= q;
            end
        end
    endgenerate
    /* verilator lint_on UNUSEDSIGNAL */
    assign rd_data = out_mem[rd_addr];
    assign busy = state != IDLE;

    wire last_step = {w("step", dim)} + 1 == {w("dim_k", dim)};
    wire last_row = {w("row", lane)} + 1 == ROWS;
    wire more_cols = {w("tile_j", dim)} + COLS < n_wide;
    wire more_rows = {w("tile_i", dim)} + ROWS < m_wide;
    always @(posedge clk) begin
        if (rst) begin
            state <= IDLE; done <= 1'b0; cycles <= 32'd0;
            tile_i <= {dim}'d0; tile_j <= {dim}'d0; step <= {dim}'d0; row <= {lane}'d0;
        end else begin
            done <= 1'b0;
            if (state != IDLE) cycles <= cycles + 32'd1;
            case (state)
                IDLE: if (start) begin
                    state <= LOAD; cycles <= 32'd1; tile_i <= {dim}'d0; tile_j <= {dim}'d0;
                    {bank_latch}
                end
                LOAD: begin state <= MAC; step <= {dim}'d0; end
                MAC: if (last_step) begin state <= WRITE; row <= {lane}'d0; end
                     else step <= step + {dim}'d1;
                WRITE: if (!last_row) row <= row + {lane}'d1;
                    else if (more_cols) begin
                        tile_j <= tile_j + {dim}'d{cfg.cols}; state <= LOAD;
                    end
                    else if (more_rows) begin
                        tile_i <= tile_i + {dim}'d{cfg.rows}; tile_j <= {dim}'d0; state <= LOAD;
                    end else begin state <= IDLE; done <= 1'b1; end
            endcase
        end
    end
endmodule
"""

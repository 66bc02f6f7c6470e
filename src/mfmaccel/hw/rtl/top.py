"""The accelerator top (`accel_top`): the GEMM engine, the streaming softmax and LayerNorm, and a
vector unit, sharing an on-chip scratchpad, with a port to off-chip memory, run by a
controller that fetches a compiled program (`hw.rtl.program`) from off-chip memory.

Memories. The scratchpad (`accel_spad`) is an inferred memory with two registered read ports
and one write port, `spad_words` 32-bit words: the shape of a two-read, one-write SRAM macro,
which it can be swapped for. Off-chip memory sits behind `mem_*` (one 32-bit word per cycle,
a read's data the cycle after its request; the testbench holds it). The GEMM engine keeps
its own operand buffers (`hw.rtl.gemm`), filled by copies; the LayerNorm unit keeps its
gamma and beta.

Datapath. Copies, the residual add and i-GELU run one element per cycle: a read issued in one
cycle is written, transformed, the next. The per-token shift reads each row twice (its
largest magnitude, then the shifted values) and writes the row's shift after it. The
softmax, norm and rotary rows go through the streaming units one element per beat
(`stream_lanes` = 1): the row in, then the results out. A GEMM starts the engine on what its
buffers hold and then copies its M x N outputs into the scratchpad, one per cycle; split into
`start` and `finish`, the copies of the next chunk's weights run between them, into the
engine's other bank. Apart from that, one instruction at a time; `top_cycles` counts them.
"""

from __future__ import annotations

from dataclasses import dataclass

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intops.activations import PROBABILITY_BITS
from mfmaccel.hw.intops.norms import GAMMA_BITS, NORM_INPUT
from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.gemm import gemm_verilog
from mfmaccel.hw.rtl.program import WORDS
from mfmaccel.hw.rtl.stream_common import bits_for, iexp_function
from mfmaccel.hw.rtl.stream_elementwise import TABLE_BITS, stream_rotary_verilog
from mfmaccel.hw.rtl.stream_norm import stream_layernorm_verilog, stream_rmsnorm_verilog
from mfmaccel.hw.rtl.stream_softmax import stream_softmax_verilog
from mfmaccel.hw.rtl.units import mac_array_verilog, requant_verilog


@dataclass(frozen=True)
class TopConfig:
    """The top's sizes. `engine` configures the GEMM engine and the streaming units: operands
    of at least PROBABILITY_BITS + 1 bits (the softmax's probabilities are the context
    product's A), int32 outputs (saturated per instruction), one element per beat."""

    engine: RtlConfig
    spad_words: int = 1 << 17
    dram_words: int = 1 << 22

    def __post_init__(self) -> None:
        e = self.engine
        if e.in_bits < PROBABILITY_BITS + 1:
            raise UserInputError(f"the top's GEMM operands need in_bits of at least "
                                 f"{PROBABILITY_BITS + 1} (probabilities), got {e.in_bits}")
        if e.out_bits != 32 or e.acc_bits != 32 or e.stream_lanes != 1 or e.b_banks != 2:
            raise UserInputError("the top's engine needs out_bits=32, acc_bits=32, "
                                 "stream_lanes=1 and b_banks=2 (see TopConfig)")
        for name in ("spad_words", "dram_words"):
            if getattr(self, name) < 2:
                raise UserInputError(f"{name} must be at least 2, got {getattr(self, name)}")


def top_config(*, max_tokens: int, max_k: int, max_row: int, rows: int = 8, cols: int = 8,
               max_n: int = 64, head_dim: int = 64, spad_words: int = 1 << 17,
               dram_words: int = 1 << 22) -> TopConfig:
    """A top sized for sequences of `max_tokens`, GEMMs of depth up to `max_k`, rows up to
    `max_row` (the widest norm or softmax row) and rotary head vectors of `head_dim`; GEMM
    outputs go `max_n` columns at a time."""
    engine = RtlConfig(rows=rows, cols=cols, in_bits=16, out_bits=32, max_m=max_tokens,
                       max_n=max_n, max_k=max_k, stream_lanes=1, max_row=max_row,
                       rotary_dim=head_dim, b_banks=2)
    return TopConfig(engine, spad_words, dram_words)


def top_files(cfg: TopConfig) -> dict[str, str]:
    """Every Verilog file of the top, by file name."""
    e = cfg.engine
    return {"accel_top.v": top_verilog(cfg), "gemm.v": gemm_verilog(e),
            "mac_array.v": mac_array_verilog(e), "requant.v": requant_verilog(e),
            "stream_softmax.v": stream_softmax_verilog(e, runtime_exp=True),
            "stream_layernorm.v": stream_layernorm_verilog(e),
            "stream_rmsnorm.v": stream_rmsnorm_verilog(e),
            "stream_rotary.v": stream_rotary_verilog(e)}


SPAD = """// accel_spad: the scratchpad, an inferred memory
// (two registered read ports, one write port)
/* verilator lint_off DECLFILENAME */
module accel_spad #(parameter WORDS = 2, parameter AW = 1) (
    input  wire clk,
    input  wire we,
    input  wire [AW-1:0] waddr,
    input  wire [31:0] wdata,
    input  wire re0,
    input  wire [AW-1:0] raddr0,
    output reg  [31:0] rdata0,
    input  wire re1,
    input  wire [AW-1:0] raddr1,
    output reg  [31:0] rdata1
);
    reg [31:0] mem [0:WORDS-1];
    always @(posedge clk) begin
        if (we) mem[waddr] <= wdata;
        if (re0) rdata0 <= mem[raddr0];
        if (re1) rdata1 <= mem[raddr1];
    end
endmodule
/* verilator lint_on DECLFILENAME */
"""

FUNCTIONS = """
    function [31:0] saturate;  // a signed value to `width` signed bits, sign-extended
        input signed [71:0] value;
        input [31:0] width;
        reg signed [71:0] top, bottom;
        /* verilator lint_off UNUSEDSIGNAL */  // within `width` <= 32 bits once saturated
        reg signed [71:0] kept;
        /* verilator lint_on UNUSEDSIGNAL */
        begin
            top = (72'sd1 <<< (width - 1)) - 72'sd1;
            bottom = -top - 72'sd1;
            kept = (value > top) ? top : (value < bottom) ? bottom : value;
            saturate = kept[31:0];
        end
    endfunction

    function signed [71:0] round_shift;  // (x + 2^(s-1)) >>> s, x itself when s is 0
        input signed [71:0] x;
        input [5:0] s;
        begin
            round_shift = (s == 6'd0) ? x : (x + (72'sd1 <<< (s - 6'd1))) >>> s;
        end
    endfunction

    function [31:0] residual;  // hw.intops.residual_add: a m_a + b m_b, one rounding shift
        input [31:0] a, b, m_a, m_b;
        /* verilator lint_off UNUSEDSIGNAL */  // shifts are 0..63
        input [31:0] shift;
        /* verilator lint_on UNUSEDSIGNAL */
        input [31:0] width;
        begin
            residual = saturate(round_shift($signed({{40{a[31]}}, a}) * $signed({40'd0, m_a})
                                            + $signed({{40{b[31]}}, b}) * $signed({40'd0, m_b}),
                                            shift[5:0]), width);
        end
    endfunction

    function [31:0] gelu;  // hw.intops.IGelu, then the requantization to int32
        input [31:0] x, q_b, q_c, m;
        /* verilator lint_off UNUSEDSIGNAL */  // shifts are 0..63
        input [31:0] shift;
        /* verilator lint_on UNUSEDSIGNAL */
        reg signed [71:0] q, b, one, magnitude, clipped, erf, g;
        begin
            q = $signed({{40{x[31]}}, x});
            b = $signed({{40{q_b[31]}}, q_b});
            one = $signed({{40{q_c[31]}}, q_c});
            magnitude = (q < 0) ? -q : q;
            clipped = (magnitude < -b) ? magnitude : -b;
            erf = (clipped + b) * (clipped + b) + one;
            erf = (q > 0) ? erf : (q < 0) ? -erf : 72'sd0;
            g = -q * (erf + one);
            gelu = saturate(round_shift(g * $signed({40'd0, m}), shift[5:0]), 32'd32);
        end
    endfunction

    function [31:0] silu;  // hw.intops.i_silu: x sigmoid(x), the sigmoid from i-exp
        input [31:0] x, q_ln2, q_b, q_c;
        input [63:0] q_one;
        /* verilator lint_off UNUSEDSIGNAL */  // shifts are 0..63
        input [31:0] coarser;
        /* verilator lint_on UNUSEDSIGNAL */
        reg signed [71:0] coarse;
        reg [31:0] e;
        reg [71:0] low;
        reg signed [71:0] sigmoid;
        begin
            coarse = round_shift($signed({{40{x[31]}}, x}), coarser[5:0]);
            e = iexp(coarse < 0 ? coarse[33:0] : -coarse[33:0], q_ln2, q_b, q_c);
            low = {25'd0, e, 15'd0} / ({40'd0, e} + {8'd0, q_one});
            sigmoid = (coarse > 0) ? 72'sd32768 - $signed(low) : $signed(low);
            silu = saturate($signed({{40{x[31]}}, x}) * sigmoid, 32'd32);
        end
    endfunction

    function [5:0] token_shift;  // hw.intops.token_shifts: bits of the largest magnitude - 7
        input [32:0] magnitude_max;
        integer i;
        reg [5:0] length;
        begin
            length = 6'd1;  // a row of zeros counts as 1
            for (i = 0; i < 33; i = i + 1) if (magnitude_max[i]) length = i[5:0] + 6'd1;
            token_shift = (length > 6'd7) ? length - 6'd7 : 6'd0;
        end
    endfunction
"""


def top_verilog(cfg: TopConfig) -> str:
    """The module `accel_top` (and `accel_spad`); instantiates `gemm`, `stream_softmax` and
    `stream_layernorm` (their files)."""
    e = cfg.engine
    daw, saw = bits_for(cfg.dram_words - 1), bits_for(cfg.spad_words - 1)
    eaw = max(bits_for(e.max_m * e.max_k - 1), bits_for(e.max_k * e.max_n - 1),
              bits_for(e.max_n - 1), bits_for(e.max_m - 1))
    oaw = bits_for(e.max_m * e.max_n - 1)
    dim = bits_for(max(e.max_m, e.max_n, e.max_k))
    naw = bits_for(e.max_row - 1)
    text = TOP.replace("@FUNCTIONS@", FUNCTIONS + iexp_function("iexp", 34, None))
    for key, value in {"DAW": daw, "SAW": saw, "EAW": eaw, "OAW": oaw, "DIM": dim,
                       "NAW": naw, "SPAD_WORDS": cfg.spad_words, "MAX_N": e.max_n,
                       "MAX_ROW": e.max_row, "GAMMA_W": GAMMA_BITS, "NORM_IN": NORM_INPUT.bits,
                       "M_W": e.multiplier_bits, "SHIFT_W": e.shift_bits,
                       "WORDS": WORDS, "PROB_W": e.softmax_bits, "IN_W": e.in_bits,
                       "ROT_OUT": e.in_bits + 2,
                       "TABLE_W": TABLE_BITS, "ROT_DIM": e.rotary_dim,
                       "ROT_AW": bits_for(e.rotary_dim - 1)}.items():
        text = text.replace(f"@{key}@", str(value))
    return text + SPAD


TOP = """// accel_top: the GEMM engine, streaming softmax and LayerNorm, and a vector unit around
// one scratchpad, run by a controller that fetches its program from off-chip memory
// (mfmaccel.hw.rtl.top; instruction set: mfmaccel.hw.rtl.program).
module accel_top (
    input  wire clk,
    input  wire rst,
    input  wire start,
    input  wire [@DAW@-1:0] program_base,  // off-chip word address of the first instruction
    output wire busy,
    output reg  done,
    output reg  fault,                     // an unknown opcode or kind stopped the program
    output reg  [31:0] cycles,             // from the edge taking start to the one raising done
    output wire mem_re,                    // off-chip memory: one word per cycle,
    output wire mem_we,                    // read data the cycle after the request
    output wire [@DAW@-1:0] mem_addr,
    output wire [31:0] mem_wdata,
    input  wire [31:0] mem_rdata
);
    localparam [3:0] S_IDLE = 4'd0, S_FETCH = 4'd1, S_DECODE = 4'd2, S_STREAM = 4'd3,
                     S_GEMM_GO = 4'd4, S_GEMM_WAIT = 4'd5, S_GEMM_OUT = 4'd6, S_FEED = 4'd7,
                     S_DRAIN = 4'd8, S_TS_MAX = 4'd9, S_TS_OUT = 4'd10, S_TS_AUX = 4'd11;
    localparam [31:0] OP_END = 0, OP_COPY = 1, OP_GEMM = 2, OP_VECTOR = 3;
    // targets 2..6 are the engine's buffers: A, B, bias, row shifts, channel multipliers
    localparam [3:0] T_SPAD = 0, T_DRAM = 1, T_GAMMA = 7, T_BETA = 8, T_COS = 9, T_SIN = 10;
    localparam [31:0] K_ADD = 0, K_GELU = 1, K_TOKEN = 2, K_SOFTMAX = 3, K_NORM = 4, K_RMS = 5,
                      K_ROTARY = 6, K_CAUSAL = 7, K_SILU = 8, K_REQUANT = 9, K_MUL = 10;
    localparam [31:0] MAX_N = @MAX_N@;
    localparam [4:0] WORDS = @WORDS@;
    localparam [@DAW@-1:0] STEP = {{(@DAW@-5){1'b0}}, WORDS};  // the next instruction

    reg [3:0] state;
    reg [@DAW@-1:0] pc;
    reg [4:0] fetched;                     // words of the instruction read so far
    reg [31:0] w [0:WORDS-1];              // the instruction
    reg [31:0] r, c;                       // row and column being issued
    reg [31:0] a_row, a_addr, b_row, b_addr, d_row, d_addr;
    reg pending;                           // a read issued last cycle: write it this cycle
    reg pending_last;                      // ... and it was the row's last element
    reg [31:0] pending_addr;
    reg [32:0] largest;
    reg [5:0] row_shift;

    wire [31:0] op = w[0];
    wire copying = state == S_STREAM && op == OP_COPY;
    wire from_dram = w[1][3:0] == 4'd0;
    wire [3:0] target = w[1][7:4];
    wire [31:0] kind = w[1];
    // field views: copy (rows, cols, src base/row/col, dst base/row), vector (rows, length,
    // a base/row, b base/row, dst base/row, constants, aux base), gemm (m, n, k, shift,
    // width, dst base/row)
    wire [31:0] rows = w[2];
    // a causal softmax's row r holds r + 1 scores (the keys at or before its token)
    wire [31:0] cols = (op == OP_VECTOR && kind == K_CAUSAL) ? r + 32'd1 : w[3];
    wire [31:0] a_col = copying ? w[6] : 32'd1;
    wire [31:0] aux = w[10], c0 = w[11], c1 = w[12], c2 = w[13], c3 = w[14], c4 = w[15];
    wire [31:0] c5 = w[16];

    // --- memories ---
    wire issue = (state == S_STREAM || state == S_FEED || state == S_TS_MAX
                  || state == S_TS_OUT) && r < rows && c < cols;
    wire [31:0] spad_rdata0, spad_rdata1;
    reg spad_we;
    /* verilator lint_off UNUSEDSIGNAL */  // addresses are 32-bit fields; the memories use the
                                           // low bits (a program's addresses fit them)
    reg [31:0] spad_waddr, spad_wdata;
    accel_spad #(.WORDS(@SPAD_WORDS@), .AW(@SAW@)) spad (
        .clk(clk), .we(spad_we), .waddr(spad_waddr[@SAW@-1:0]), .wdata(spad_wdata),
        .re0(issue && !(copying && from_dram)), .raddr0(a_addr[@SAW@-1:0]),
        .rdata0(spad_rdata0),
        .re1(issue && state == S_STREAM && op == OP_VECTOR && (kind == K_ADD || kind == K_MUL)),
        .raddr1(b_addr[@SAW@-1:0]), .rdata1(spad_rdata1)
    );
    reg dram_we;
    reg [31:0] dram_waddr, dram_wdata;
    wire fetch_read = state == S_FETCH && fetched < WORDS;
    wire [31:0] fetch_addr = {{(32-@DAW@){1'b0}}, pc} + {27'd0, fetched};
    reg [31:0] eng_wr_addr;
    /* verilator lint_on UNUSEDSIGNAL */
    assign mem_re = fetch_read || (issue && copying && from_dram);
    assign mem_we = dram_we;
    assign mem_addr = dram_we ? dram_waddr[@DAW@-1:0]
                    : fetch_read ? fetch_addr[@DAW@-1:0] : a_addr[@DAW@-1:0];
    assign mem_wdata = dram_wdata;
    wire [31:0] a_data = (copying && from_dram) ? mem_rdata : spad_rdata0;

    // --- the GEMM engine ---
    reg eng_wr_en;
    reg [2:0] eng_wr_sel;
    reg [31:0] eng_wr_data;
    wire [31:0] eng_rd_data;
    /* verilator lint_off UNUSEDSIGNAL */  // the controller waits for done and counts itself;
    // a unit takes every beat of a row (in_ready stays high while it takes one) and each
    // beat holds one element
    wire eng_done;                         // the controller waits for !busy instead
    wire eng_busy;
    wire [31:0] eng_cycles;
    wire sm_in_ready, ln_in_ready, rms_in_ready, rot_in_ready;
    wire sm_out_count, ln_out_count, rms_out_count, rot_out_count;
    /* verilator lint_on UNUSEDSIGNAL */
    reg [31:0] out_addr;                   // the engine's output buffer: i * MAX_N + j
    // a run's shape, latched at its start: the instructions after a `start` change w
    reg [@DIM@-1:0] eng_m, eng_n, eng_k;
    reg [@SHIFT_W@-1:0] eng_shift;
    reg fill_bank;                         // the bank copies into B, bias and m write
    gemm engine (
        .clk(clk), .rst(rst), .wr_en(eng_wr_en), .wr_sel(eng_wr_sel),
        .wr_addr(eng_wr_addr[@EAW@-1:0]), .wr_data(eng_wr_data),
        .run_bank(fill_bank), .wr_bank(fill_bank),
        .dim_m(eng_m), .dim_n(eng_n), .dim_k(eng_k),
        .rq_shift(eng_shift), .start(state == S_GEMM_GO), .busy(eng_busy),
        .done(eng_done), .cycles(eng_cycles), .rd_addr(out_addr[@OAW@-1:0]),
        .rd_data(eng_rd_data)
    );

    // --- the streaming units: rows in one element per beat, results out ---
    wire sm_out_valid, ln_out_valid, sm_out_last, ln_out_last;
    wire rms_out_valid, rot_out_valid, rms_out_last, rot_out_last;
    wire [@PROB_W@-1:0] sm_out_data;
    wire [31:0] ln_out_data, rms_out_data;
    wire [@ROT_OUT@-1:0] rot_out_data;
    wire to_softmax = kind == K_SOFTMAX || kind == K_CAUSAL;
    wire unit_in_valid = state == S_FEED && pending;
    stream_softmax softmax (
        .clk(clk), .rst(rst), .in_valid(unit_in_valid && to_softmax), .in_ready(sm_in_ready),
        .in_data(spad_rdata0), .in_count(1'b1), .in_last(pending_last),
        .out_valid(sm_out_valid), .out_ready(state == S_DRAIN), .out_data(sm_out_data),
        .out_count(sm_out_count), .out_last(sm_out_last),
        .exp_ln2(c0), .exp_b(c1), .exp_c(c2)
    );
    reg [@GAMMA_W@-1:0] gamma_stage [0:@MAX_ROW@-1];
    reg par_we;
    reg [@NAW@-1:0] par_addr;
    reg [@GAMMA_W@-1:0] par_gamma;
    reg [31:0] par_beta;
    stream_layernorm norm (
        .clk(clk), .rst(rst), .in_valid(unit_in_valid && kind == K_NORM),
        .in_ready(ln_in_ready),
        .in_data(spad_rdata0[@NORM_IN@-1:0]), .in_count(1'b1), .in_last(pending_last),
        .out_valid(ln_out_valid), .out_ready(state == S_DRAIN), .out_data(ln_out_data),
        .out_count(ln_out_count), .out_last(ln_out_last),
        .par_we(par_we), .par_addr(par_addr), .par_gamma(par_gamma), .par_beta(par_beta),
        .eps({c4[15:0], c0}), .rq_m(c1[@M_W@-1:0]), .rq_shift(c2[@SHIFT_W@-1:0])
    );
    stream_rmsnorm rms (
        .clk(clk), .rst(rst), .in_valid(unit_in_valid && kind == K_RMS), .in_ready(rms_in_ready),
        .in_data(spad_rdata0[@NORM_IN@-1:0]), .in_count(1'b1), .in_last(pending_last),
        .out_valid(rms_out_valid), .out_ready(state == S_DRAIN), .out_data(rms_out_data),
        .out_count(rms_out_count), .out_last(rms_out_last),
        .par_we(par_we), .par_addr(par_addr), .par_gamma(par_gamma),
        .eps({c4[15:0], c0}), .rq_m(c1[@M_W@-1:0]), .rq_shift(c2[@SHIFT_W@-1:0])
    );
    reg [@TABLE_W@-1:0] cos_stage [0:@ROT_DIM@-1];
    reg rot_we;
    reg [@ROT_AW@-1:0] rot_addr;
    reg [@TABLE_W@-1:0] rot_cos, rot_sin;
    stream_rotary rotary (
        .clk(clk), .rst(rst), .in_valid(unit_in_valid && kind == K_ROTARY),
        .in_ready(rot_in_ready), .in_data(spad_rdata0[@IN_W@-1:0]), .in_count(1'b1),
        .in_last(pending_last), .out_valid(rot_out_valid), .out_ready(state == S_DRAIN),
        .out_data(rot_out_data), .out_count(rot_out_count), .out_last(rot_out_last),
        .par_we(rot_we), .par_addr(rot_addr), .par_cos(rot_cos), .par_sin(rot_sin)
    );
    wire out_valid = to_softmax ? sm_out_valid : kind == K_NORM ? ln_out_valid
                   : kind == K_RMS ? rms_out_valid : rot_out_valid;
    wire out_last = to_softmax ? sm_out_last : kind == K_NORM ? ln_out_last
                  : kind == K_RMS ? rms_out_last : rot_out_last;
    wire [31:0] unit_word = kind == K_NORM ? ln_out_data : kind == K_RMS ? rms_out_data
                          : {{(32-@ROT_OUT@){rot_out_data[@ROT_OUT@-1]}}, rot_out_data};
    wire [31:0] out_word = to_softmax ? {{(32-@PROB_W@){1'b0}}, sm_out_data}
                                      : saturate({{40{unit_word[31]}}, unit_word}, c3);
@FUNCTIONS@
    // the element written this cycle by the stream (copy, add, gelu) and the token shift
    wire [31:0] stream_value = copying ? a_data
        : kind == K_ADD ? residual(a_data, spad_rdata1, c0, c1, c2, c3)
        : kind == K_GELU ? gelu(a_data, c0, c1, c2, c3)
        : kind == K_SILU ? silu(a_data, c0, c1, c2, {c4, c3}, c5)
        : kind == K_REQUANT ? saturate(round_shift($signed({{40{a_data[31]}}, a_data})
                                                   * $signed({40'd0, c0}), c1[5:0]), c2)
        : saturate(round_shift($signed({{40{a_data[31]}}, a_data})
                               * $signed({{40{spad_rdata1[31]}}, spad_rdata1})
                               * $signed({40'd0, c0}), c1[5:0]), c2);  // K_MUL
    wire [31:0] shifted = saturate(round_shift($signed({{40{a_data[31]}}, a_data}), row_shift),
                                   32'd8);
    wire [32:0] magnitude = a_data[31] ? -{1'b1, a_data} : {1'b0, a_data};
    wire row_issued = c + 32'd1 == cols;   // this cycle issues the row's last element
    wire [31:0] dst_base = (op == OP_COPY) ? w[7] : (op == OP_GEMM) ? w[6] : w[8];
    wire [31:0] dst_row_stride = (op == OP_COPY) ? w[8] : w[9];
    // a row operation's next row: both passes done, its results written
    wire last_row = r + 32'd1 == rows;
    wire stream_done = !issue && !pending;
    assign busy = state != S_IDLE;

    task next_row;  // a row operation's row is done: the next one from `first`, or the end
        input [3:0] first;
        begin
            r <= r + 32'd1; c <= 32'd0;
            a_row <= a_row + w[5]; a_addr <= a_row + w[5];
            d_row <= d_row + w[9]; d_addr <= d_row + w[9];
            if (last_row) begin state <= S_FETCH; pc <= pc + STEP; fetched <= 5'd0; end
            else state <= first;
        end
    endtask

    always @(posedge clk) begin
        spad_we <= 1'b0; dram_we <= 1'b0; eng_wr_en <= 1'b0; par_we <= 1'b0; rot_we <= 1'b0;
        done <= 1'b0;
        if (rst) begin
            state <= S_IDLE; fault <= 1'b0; cycles <= 32'd0; pending <= 1'b0; fill_bank <= 1'b0;
        end else begin
            if (state != S_IDLE) cycles <= cycles + 32'd1;
            // the element pipeline: a read issued now is written next cycle
            pending <= issue;
            pending_last <= issue && row_issued;
            pending_addr <= d_addr;
            if (issue) begin  // a stream wraps to its next row; a row operation stops at c = cols
                if (row_issued && state == S_STREAM) begin
                    c <= 32'd0; r <= r + 32'd1;
                    a_row <= a_row + w[5]; a_addr <= a_row + w[5];
                    b_row <= b_row + w[7]; b_addr <= b_row + w[7];
                    d_row <= d_row + dst_row_stride; d_addr <= d_row + dst_row_stride;
                end else begin
                    c <= c + 32'd1; a_addr <= a_addr + a_col; b_addr <= b_addr + 32'd1;
                    d_addr <= d_addr + 32'd1;
                end
            end
            case (state)
                S_IDLE: if (start) begin
                    state <= S_FETCH; pc <= program_base; fetched <= 5'd0; cycles <= 32'd1;
                    fault <= 1'b0;
                end
                S_FETCH: begin
                    if (fetched != 5'd0) w[fetched - 5'd1] <= mem_rdata;
                    if (fetched == WORDS) state <= S_DECODE;
                    fetched <= fetched + 5'd1;
                end
                S_DECODE: begin
                    r <= 32'd0; c <= 32'd0;
                    a_row <= w[4]; a_addr <= w[4];
                    b_row <= w[6]; b_addr <= w[6];
                    d_row <= dst_base; d_addr <= dst_base;
                    if (op == OP_END) begin state <= S_IDLE; done <= 1'b1; end
                    else if (op == OP_COPY) state <= S_STREAM;
                    else if (op == OP_GEMM) begin  // mode 2 (finish) waits for a started run
                        state <= (w[8] == 32'd2) ? S_GEMM_WAIT : S_GEMM_GO; out_addr <= 32'd0;
                    end
                    else if (op == OP_VECTOR && (kind == K_ADD || kind == K_GELU
                                                 || kind == K_SILU || kind == K_REQUANT
                                                 || kind == K_MUL))
                        state <= S_STREAM;
                    else if (op == OP_VECTOR && kind == K_TOKEN) begin
                        state <= S_TS_MAX; largest <= 33'd0;
                    end
                    else if (op == OP_VECTOR && (kind == K_SOFTMAX || kind == K_NORM
                                                 || kind == K_RMS || kind == K_ROTARY
                                                 || kind == K_CAUSAL))
                        state <= S_FEED;
                    else begin state <= S_IDLE; fault <= 1'b1; done <= 1'b1; end
                end
                S_STREAM: begin
                    if (pending) begin
                        if (!copying || target == T_SPAD) begin
                            spad_we <= 1'b1; spad_waddr <= pending_addr; spad_wdata <= stream_value;
                        end else if (target == T_DRAM) begin
                            dram_we <= 1'b1; dram_waddr <= pending_addr; dram_wdata <= a_data;
                        end else if (target == T_GAMMA) begin
                            gamma_stage[pending_addr[@NAW@-1:0]] <= a_data[@GAMMA_W@-1:0];
                        end else if (target == T_COS) begin
                            cos_stage[pending_addr[@ROT_AW@-1:0]] <= a_data[@TABLE_W@-1:0];
                        end else if (target == T_SIN) begin
                            rot_we <= 1'b1; rot_addr <= pending_addr[@ROT_AW@-1:0];
                            rot_cos <= cos_stage[pending_addr[@ROT_AW@-1:0]];
                            rot_sin <= a_data[@TABLE_W@-1:0];
                        end else if (target == T_BETA) begin
                            par_we <= 1'b1; par_addr <= pending_addr[@NAW@-1:0];
                            par_gamma <= gamma_stage[pending_addr[@NAW@-1:0]];
                            par_beta <= a_data;
                        end else begin
                            eng_wr_en <= 1'b1; eng_wr_sel <= target[2:0] - 3'd2;
                            eng_wr_addr <= pending_addr; eng_wr_data <= a_data;
                        end
                    end
                    if (stream_done) begin state <= S_FETCH; pc <= pc + STEP; fetched <= 5'd0; end
                end
                S_GEMM_GO: begin  // the engine starts on this edge; copies go to the other bank
                    eng_m <= w[1][@DIM@-1:0]; eng_n <= w[2][@DIM@-1:0]; eng_k <= w[3][@DIM@-1:0];
                    eng_shift <= w[4][@SHIFT_W@-1:0]; fill_bank <= !fill_bank;
                    if (w[8] == 32'd1) begin state <= S_FETCH; pc <= pc + STEP; fetched <= 5'd0; end
                    else state <= S_GEMM_WAIT;
                end
                S_GEMM_WAIT: if (!eng_busy) state <= S_GEMM_OUT;
                S_GEMM_OUT: begin  // one output per cycle into the scratchpad
                    spad_we <= 1'b1; spad_waddr <= d_addr;
                    spad_wdata <= saturate({{40{eng_rd_data[31]}}, eng_rd_data}, w[5]);
                    if (c + 32'd1 == w[2]) begin
                        c <= 32'd0; r <= r + 32'd1; out_addr <= (r + 32'd1) * MAX_N;
                        d_row <= d_row + w[7]; d_addr <= d_row + w[7];
                        if (r + 32'd1 == w[1]) begin
                            state <= S_FETCH; pc <= pc + STEP; fetched <= 5'd0;
                        end
                    end else begin
                        c <= c + 32'd1; out_addr <= out_addr + 32'd1; d_addr <= d_addr + 32'd1;
                    end
                end
                S_FEED: if (!issue && !pending) begin  // the row is in the unit
                    state <= S_DRAIN; d_addr <= d_row;
                end
                S_DRAIN: if (out_valid) begin
                    spad_we <= 1'b1; spad_waddr <= d_addr; spad_wdata <= out_word;
                    d_addr <= d_addr + 32'd1;
                    if (out_last) next_row(S_FEED);
                end
                S_TS_MAX: begin  // pass 1: the row's largest magnitude
                    if (pending && magnitude > largest) largest <= magnitude;
                    if (!issue && !pending) begin
                        state <= S_TS_OUT; row_shift <= token_shift(largest);
                        c <= 32'd0; a_addr <= a_row; d_addr <= d_row;
                    end
                end
                S_TS_OUT: begin  // pass 2: the row shifted, rounded, saturated to int8
                    if (pending) begin
                        spad_we <= 1'b1; spad_waddr <= pending_addr; spad_wdata <= shifted;
                    end
                    if (!issue && !pending) state <= S_TS_AUX;
                end
                default: begin  // S_TS_AUX: the row's shift, then the next row
                    spad_we <= 1'b1; spad_waddr <= aux + r; spad_wdata <= {26'd0, row_shift};
                    largest <= 33'd0;
                    next_row(S_TS_MAX);
                end
            endcase
        end
    end
endmodule
"""

"""The accelerator top's program (`hw.rtl.top`): its instruction set and how an instruction
is laid out in off-chip memory (the cycles each takes: `top_cycles`).

An instruction is `WORDS` 32-bit words in off-chip memory; the controller fetches them one
per cycle and runs the instruction before fetching the next. Word 0 is the opcode, the rest
its fields in the order of each record below:

- `Copy`: a 2-D strided copy, element (r, c) from `src_base + r src_row + c src_col` in
  off-chip memory or the scratchpad to `dst_base + r dst_row + c` in a target: the
  scratchpad, off-chip memory, one of the GEMM engine's buffers (A, B, bias, row shifts,
  channel multipliers), or the LayerNorm unit's parameters (gamma into a staging buffer, then
  beta, which writes the (gamma, beta) pair). One element per cycle.
- `Gemm`: run the engine on what its buffers hold (M x K by K x N, the requantization shift),
  then copy its M x N outputs into the scratchpad, saturated to `width` bits. Its `mode`
  splits that in two around the copies of the next output chunk's weights: `start` starts
  the engine and goes on to the next instruction (later copies into B, the bias and the
  multipliers fill the other bank); `finish` waits for the engine and copies the outputs.
- `Vector`: a row operation over `rows` rows of `length` elements in the scratchpad, its
  constants by kind:
  - element by element: `add` (the residual add: m_a, m_b, shift, width), `gelu` (i-GELU's
    q_b, q_c, then the requantization to int32: m, shift), `silu` (i-SiLU: the sigmoid's
    i-exp q_ln2, q_b, q_c, its q_one as low and high words, the bits it sees the input
    coarser), `requant` (m,
    shift, width), `mul` (a x b requantized: m, shift, width);
  - by rows: `token_shift` (int8 rows and one shift per row at `aux_base`), `softmax` and
    `causal_softmax` (row r of r + 1 keys; i-exp's q_ln2, q_b, q_c), `layernorm` and
    `rmsnorm` (eps's low word, m, shift, width, eps's high word), `rotary` (head vectors of
    one position, its cos and sin copied in first; the width).
- `End`: stop; `done` rises.

Every element in either memory is one 32-bit word, sign-extended: int8 weights take a word
each (a packed layout would move 4 per word; the model prices what this one moves).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

from mfmaccel.errors import UserInputError

WORDS = 20  # per instruction
OP_END, OP_COPY, OP_GEMM, OP_VECTOR = 0, 1, 2, 3
DRAM, SPAD = 0, 1  # copy sources (and the first two targets)
TARGETS = ("spad", "dram", "gemm_a", "gemm_b", "gemm_bias", "gemm_shift", "gemm_m",
           "norm_gamma", "norm_beta", "rotary_cos", "rotary_sin")
KINDS = ("add", "gelu", "token_shift", "softmax", "layernorm", "rmsnorm", "rotary",
         "causal_softmax", "silu", "requant", "mul")
UNIT_KINDS = ("softmax", "layernorm", "rmsnorm", "rotary", "causal_softmax")  # streaming units
ELEMENT_KINDS = ("add", "gelu", "silu", "requant", "mul")  # one element per cycle
FETCH_CYCLES = WORDS + 1  # one read per word, the last word lands a cycle later
GEMM_MODES = ("run", "start", "finish")  # see `Gemm` in the module docstring


@dataclass(frozen=True)
class Copy:
    source: int  # DRAM or SPAD
    target: str  # one of TARGETS
    rows: int
    cols: int
    src_base: int
    src_row: int
    src_col: int
    dst_base: int
    dst_row: int


@dataclass(frozen=True)
class Gemm:
    m: int
    n: int
    k: int
    shift: int  # the requantization shift shared by the channels
    width: int  # outputs saturated to this many signed bits (8, 16 or 32)
    dst_base: int
    dst_row: int
    mode: str = "run"  # one of GEMM_MODES


@dataclass(frozen=True)
class Vector:
    kind: str  # one of KINDS
    rows: int
    length: int
    a_base: int
    a_row: int
    dst_base: int
    dst_row: int
    b_base: int = 0  # the residual add's second operand
    b_row: int = 0
    constants: tuple[int, ...] = ()  # up to 9, by kind (see the module docstring)
    aux_base: int = 0  # the per-token shifts, one word per row


@dataclass(frozen=True)
class End:
    pass


Instruction = Copy | Gemm | Vector | End


def _word(value: int) -> int:
    if not -(1 << 31) <= value < (1 << 32):
        raise UserInputError(f"program field {value} does not fit a 32-bit word")
    return value & 0xFFFF_FFFF


def encode(instruction: Instruction) -> list[int]:
    """The instruction's WORDS words."""
    if isinstance(instruction, Copy):
        head = [OP_COPY, instruction.source | TARGETS.index(instruction.target) << 4]
        fields = list(astuple(instruction)[2:])
    elif isinstance(instruction, Gemm):
        head = [OP_GEMM]
        fields = [*astuple(instruction)[:-1], GEMM_MODES.index(instruction.mode)]
    elif isinstance(instruction, Vector):
        head = [OP_VECTOR, KINDS.index(instruction.kind)]
        v = instruction
        if len(v.constants) > WORDS - 11:
            raise UserInputError(f"a vector instruction holds {WORDS - 11} constants, got "
                                 f"{v.constants}")
        fields = [v.rows, v.length, v.a_base, v.a_row, v.b_base, v.b_row, v.dst_base,
                  v.dst_row, v.aux_base, *v.constants]
    else:
        head, fields = [OP_END], []
    words = [_word(x) for x in head + fields]
    return words + [0] * (WORDS - len(words))

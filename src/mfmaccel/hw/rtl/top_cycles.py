"""The accelerator top's cycles, instruction by instruction, worked out from its controller
(`hw.rtl.top`): no cycle depends on the data, so a program's count is known before it runs,
and the testbench holds the RTL to it exactly.

Every instruction is fetched (17 cycles: a read per word, the last word a cycle later) and
decoded (1); then
- a copy or an element-by-element vector instruction (add, gelu, silu, requant, mul): one
  element per cycle, plus 2 (the last write, the end);
- a GEMM: 1 to start the engine, its own count (`gemm_cycles`), then M x N to copy the
  outputs into the scratchpad; split in two (`start`, `finish`), the copies between them run
  beside the engine and `finish` waits only for what is left of its run;
- the per-token shift: per row 2 n + 5 (two passes of n + 2, the shift's write);
- softmax, LayerNorm, RMSNorm and rotary: per row the unit's own count
  (`stream_softmax_cycles`, `stream_layernorm_cycles`, `stream_rmsnorm_cycles`,
  `stream_rotary_cycles` at one element per beat) plus 1: the row goes in while the unit
  takes it, and the next row starts the cycle after its last result; a causal softmax's row
  r has r + 1 elements.
The count starts with the edge that takes `start` (1) and ends with the one raising `done`
(the end instruction's decode).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from mfmaccel.hw.rtl.gemm import gemm_cycles
from mfmaccel.hw.rtl.program import ELEMENT_KINDS, FETCH_CYCLES, Copy, Gemm, Instruction, Vector
from mfmaccel.hw.rtl.stream_elementwise import stream_rotary_cycles
from mfmaccel.hw.rtl.stream_norm import stream_layernorm_cycles, stream_rmsnorm_cycles
from mfmaccel.hw.rtl.stream_softmax import stream_softmax_cycles
from mfmaccel.hw.rtl.top import TopConfig

DECODE_CYCLES = 1
UNIT_CYCLES = {"softmax": stream_softmax_cycles, "layernorm": stream_layernorm_cycles,
               "rmsnorm": stream_rmsnorm_cycles, "rotary": stream_rotary_cycles}


def execute_cycles(cfg: TopConfig, instruction: Instruction) -> int:
    """Cycles from the one after its decode to the one before the next fetch, for an
    instruction that does not wait on a started run (see `timeline`)."""
    if isinstance(instruction, Copy):
        return instruction.rows * instruction.cols + 2
    if isinstance(instruction, Gemm):
        i = instruction
        return 1 + gemm_cycles(cfg.engine, i.m, i.n, i.k) + i.m * i.n
    if isinstance(instruction, Vector):
        v = instruction
        if v.kind in ELEMENT_KINDS:
            return v.rows * v.length + 2
        if v.kind == "token_shift":
            return v.rows * (2 * v.length + 5)
        if v.kind == "causal_softmax":
            return sum(stream_softmax_cycles(cfg.engine, r + 1) + 1 for r in range(v.rows))
        return v.rows * (UNIT_CYCLES[v.kind](cfg.engine, v.length) + 1)
    return 0


def timeline(cfg: TopConfig, program: Sequence[Instruction]) -> list[int]:
    """Each instruction's execution cycles in order. A `start` takes one cycle and the engine
    runs on (idle `gemm_cycles` later); a `finish` waits until then, at least one cycle, and
    copies the outputs; everything else is `execute_cycles`."""
    now, engine_idle, cycles = 1, 0, []  # `now`: the cycle about to run (0 took start)
    for instruction in program:
        now += FETCH_CYCLES + DECODE_CYCLES
        if isinstance(instruction, Gemm) and instruction.mode == "start":
            i = instruction
            engine_idle, spent = now + gemm_cycles(cfg.engine, i.m, i.n, i.k), 1
        elif isinstance(instruction, Gemm) and instruction.mode == "finish":
            spent = max(engine_idle, now) - now + 1 + instruction.m * instruction.n
        else:
            spent = execute_cycles(cfg, instruction)
        cycles.append(spent)
        now += spent
    return cycles


def instruction_class(instruction: Instruction) -> str:
    """What an instruction's cycles are spent on, for breakdowns."""
    if isinstance(instruction, Copy):
        return f"copy to {instruction.target}"
    if isinstance(instruction, Gemm):
        return "gemm"
    if isinstance(instruction, Vector):
        return instruction.kind
    return "end"


def program_cycles(cfg: TopConfig, program: Sequence[Instruction]) -> int:
    """The top's `cycles` after running `program` (ending with End)."""
    return 1 + len(program) * (FETCH_CYCLES + DECODE_CYCLES) + sum(timeline(cfg, program))


def serial_cycles(cfg: TopConfig, program: Sequence[Instruction]) -> int:
    """`program_cycles` of the same program with nothing beside the engine: each `start` and
    `finish` pair run as one GEMM after its chunk's copies (the order of instructions that do
    not overlap does not change their sum)."""
    serial = [replace(i, mode="run") if isinstance(i, Gemm) and i.mode == "finish" else i
              for i in program if not (isinstance(i, Gemm) and i.mode == "start")]
    return program_cycles(cfg, serial)


def cycle_breakdown(cfg: TopConfig, program: Sequence[Instruction]) -> dict[str, int]:
    """`program_cycles` by what they are spent on: instruction fetch and decode, each class
    of instruction, and within GEMMs the engine (or the wait for it) apart from the copy-out of
    its outputs."""
    out: Counter[str] = Counter()
    out["fetch and decode"] = 1 + len(program) * (FETCH_CYCLES + DECODE_CYCLES)
    for instruction, cycles in zip(program, timeline(cfg, program), strict=True):
        if isinstance(instruction, Gemm):
            copy_out = 0 if instruction.mode == "start" else instruction.m * instruction.n
            out["gemm engine (or waiting for it)"] += cycles - copy_out
            out["gemm output copy"] += copy_out
        elif cycles:
            out[instruction_class(instruction)] += cycles
    return dict(out)

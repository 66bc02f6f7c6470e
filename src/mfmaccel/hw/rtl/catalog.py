"""Every generated unit: its Verilog generator and the units its module instantiates."""

from __future__ import annotations

from mfmaccel.hw.rtl.gemm import gemm_verilog
from mfmaccel.hw.rtl.nonlinear import igelu_verilog, softmax_verilog
from mfmaccel.hw.rtl.norm import layernorm_verilog
from mfmaccel.hw.rtl.stream_attention import stream_attention_verilog
from mfmaccel.hw.rtl.stream_elementwise import stream_rotary_verilog, stream_silu_verilog
from mfmaccel.hw.rtl.stream_norm import stream_layernorm_verilog, stream_rmsnorm_verilog
from mfmaccel.hw.rtl.stream_softmax import stream_softmax_verilog
from mfmaccel.hw.rtl.units import (
    iexp_verilog,
    mac_array_verilog,
    requant_verilog,
    token_shift_verilog,
)

UNITS = {
    "requant": requant_verilog,
    "mac_array": mac_array_verilog,
    "iexp": iexp_verilog,
    "gemm": gemm_verilog,
    "igelu": igelu_verilog,
    "softmax": softmax_verilog,
    "layernorm": layernorm_verilog,
    "token_shift": token_shift_verilog,
    # streaming units (rows of any length; self-contained files, checked by hw.rtl.stream_verify)
    "stream_softmax": stream_softmax_verilog,
    "stream_layernorm": stream_layernorm_verilog,
    "stream_rmsnorm": stream_rmsnorm_verilog,
    "stream_silu": stream_silu_verilog,
    "stream_rotary": stream_rotary_verilog,
    "stream_attention": stream_attention_verilog,
}
# Streaming units keep a row buffer of `max_row` values, which generic synthesis builds from
# flip-flops until a memory macro replaces it: tens of minutes and gigabytes per unit in yosys,
# so the cell counts of `hw rtl --synth` and benchmarks/rtl_units.py leave them out.
STREAMING = tuple(name for name in UNITS if name.startswith("stream_"))
# the files to compile with the unit's own
DEPENDS = {"gemm": ("mac_array", "requant"), "softmax": ("iexp",), "layernorm": ("requant",)}


def unit_files(source) -> list:
    """The unit's file followed by those of the units it instantiates (same folder)."""
    return [source] + [source.with_name(f"{name}.v") for name in DEPENDS.get(source.stem, ())]

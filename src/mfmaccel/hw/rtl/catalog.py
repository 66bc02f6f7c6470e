"""Every generated unit: its Verilog generator and the units its module instantiates."""

from __future__ import annotations

from mfmaccel.hw.rtl.gemm import gemm_verilog
from mfmaccel.hw.rtl.nonlinear import igelu_verilog, softmax_verilog
from mfmaccel.hw.rtl.norm import layernorm_verilog
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
}
# the files to compile with the unit's own
DEPENDS = {"gemm": ("mac_array", "requant"), "softmax": ("iexp",), "layernorm": ("requant",)}


def unit_files(source) -> list:
    """The unit's file followed by those of the units it instantiates (same folder)."""
    return [source] + [source.with_name(f"{name}.v") for name in DEPENDS.get(source.stem, ())]

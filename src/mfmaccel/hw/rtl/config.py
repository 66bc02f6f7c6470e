"""The parameters every generated unit is built from."""

from __future__ import annotations

from dataclasses import dataclass

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intops.activations import PROBABILITY_BITS

SIGMOID_BITS = 15  # the SiLU unit's sigmoid: unsigned, scale 2^-15 (as intexec's Llama MLP)


@dataclass(frozen=True)
class RtlConfig:
    rows: int = 8  # MAC array: rows of A streamed in per cycle
    cols: int = 8  # MAC array: columns of B streamed in per cycle
    in_bits: int = 8  # operands
    acc_bits: int = 32  # accumulators
    out_bits: int = 8  # requantized outputs
    multiplier_bits: int = 31  # dyadic m
    shift_bits: int = 6  # dyadic shift, 0..63
    exp_input_scale: float = 1 / 1024  # scale of the softmax's int32 input (i-exp constants)
    gelu_input_scale: float = 8 / 127  # scale of i-GELU's int8 input (its constants)
    softmax_len: int = 8  # scores per softmax row (lanes of the softmax unit)
    softmax_bits: int = PROBABILITY_BITS  # unsigned probabilities out of the softmax unit
    norm_len: int = 8  # values per LayerNorm row (lanes of the layernorm unit)
    token_len: int = 8  # values per row of the per-token shift unit (lanes of token_shift)
    max_m: int = 16  # GEMM engine buffers: A holds max_m x max_k, B max_k x max_n
    max_n: int = 16
    max_k: int = 64
    b_banks: int = 1  # GEMM engine: banks of B, bias and multipliers (2: loads behind a run)
    # streaming units (hw.rtl.stream_*): `stream_lanes` elements per beat, rows of 1..max_row
    stream_lanes: int = 8
    max_row: int = 1024  # longest row (softmax, norms, SiLU) and most keys (attention tile)
    rmsnorm_out_bits: int = 32  # Llama's RMSNorm feeds per-token GEMMs in int32 (intexec)
    silu_input_scale: float = 1 / 2048  # scale of the SiLU unit's input (Llama's int16 gate)
    silu_bits: int = 16  # signed input bits of the SiLU unit
    silu_shift: int = 0  # the sigmoid sees the input this many bits coarser (i_silu)
    rotary_dim: int = 64  # head dimension of the rotary unit (its row length)
    attn_head_dim: int = 64  # D of the attention tile unit (values of v per key)
    attn_tile: int = 32  # keys per tile of the attention tile unit

    def __post_init__(self) -> None:
        for name in ("rows", "cols", "in_bits", "acc_bits", "out_bits", "multiplier_bits",
                     "shift_bits", "max_m", "max_n", "max_k", "softmax_len", "softmax_bits",
                     "norm_len", "token_len", "stream_lanes", "max_row", "rmsnorm_out_bits",
                     "silu_bits", "rotary_dim", "attn_head_dim", "attn_tile"):
            if getattr(self, name) < 1:
                raise UserInputError(f"RTL parameter {name} must be a positive integer, got "
                                     f"{getattr(self, name)}")
        if not 0 < self.exp_input_scale < 0.69:
            raise UserInputError(f"exp_input_scale must lie in (0, ln 2), got "
                                 f"{self.exp_input_scale}")
        if not self.gelu_input_scale > 0:
            raise UserInputError(f"gelu_input_scale must be positive, got {self.gelu_input_scale}")
        if self.rows > self.max_m or self.cols > self.max_n:
            raise UserInputError(f"a {self.rows} x {self.cols} MAC array needs buffers at least "
                                 f"as large; raise max_m/max_n (now {self.max_m}/{self.max_n})")
        if self.b_banks not in (1, 2):
            raise UserInputError(f"b_banks must be 1 or 2, got {self.b_banks}")
        if self.acc_bits < 2 * self.in_bits:
            raise UserInputError(f"accumulators of {self.acc_bits} bits cannot hold one "
                                 f"{self.in_bits}-bit product; use at least {2 * self.in_bits}")
        self._check_streaming()

    def _check_streaming(self) -> None:
        """The streaming units' parameters (`hw.rtl.stream_*`)."""
        lanes = self.stream_lanes
        if self.rotary_dim % (2 * lanes):
            raise UserInputError(f"rotary_dim ({self.rotary_dim}) must be a multiple of 2 x "
                                 f"stream_lanes ({2 * lanes}); e.g. rotary_dim="
                                 f"{2 * lanes * max(1, round(self.rotary_dim / (2 * lanes)))}")
        if self.attn_head_dim % lanes:
            raise UserInputError(f"attn_head_dim ({self.attn_head_dim}) must be a multiple of "
                                 f"stream_lanes ({lanes})")
        if not 0 <= self.silu_shift < self.silu_bits or self.silu_bits + SIGMOID_BITS > 32:
            raise UserInputError(f"silu_bits must be 1..{32 - SIGMOID_BITS} and silu_shift "
                                 f"0..silu_bits-1, got {self.silu_bits} and {self.silu_shift}")
        if not self.silu_input_scale > 0:
            raise UserInputError(f"silu_input_scale must be positive, got "
                                 f"{self.silu_input_scale}")

"""Bit-exact integer references for every unit of the integer-only accelerator (I-BERT's
algorithms, Kim et al. 2021, plus the Llama-family units), on int64 torch tensors whose values
stay inside the widths the hardware has. Every scale-dependent constant is built once, offline,
as an integer (`build` class methods); the kernels themselves see integers only. The RTL of
`mfmaccel.hw.rtl` is checked bit for bit against these."""

from mfmaccel.hw.intops.activations import IExp, IGelu, ISigmoid, i_silu, i_softmax
from mfmaccel.hw.intops.datapath import (
    INT8,
    INT32,
    DatapathOverflow,
    Dyadic,
    DyadicVector,
    IntRange,
    check_range,
    dyadic,
    dyadic_vector,
    exact_matmul,
    int_gemm,
    requantize,
    residual_add,
    rounding_shift,
    token_shifts,
)
from mfmaccel.hw.intops.norms import ILayerNorm, IRMSNorm, i_sqrt
from mfmaccel.hw.intops.rotary import IRotary

__all__ = ["INT8", "INT32", "DatapathOverflow", "Dyadic", "DyadicVector", "IExp", "IGelu",
           "ILayerNorm", "IRMSNorm", "IRotary", "ISigmoid", "IntRange", "check_range", "dyadic",
           "dyadic_vector", "exact_matmul", "i_silu", "i_softmax", "i_sqrt", "int_gemm",
           "requantize", "residual_add", "rounding_shift", "token_shifts"]

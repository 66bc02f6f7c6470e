"""Weight quantizers (round-to-nearest and GPTQ), packed integer storage, int8 activations."""

from mfmaccel.compress.quant.grid import QuantizedTensor, QuantSpec, dequantize, quantize_rtn

__all__ = ["QuantSpec", "QuantizedTensor", "dequantize", "quantize_rtn"]

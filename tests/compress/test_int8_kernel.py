"""The C++ int8 decode kernel against the dequantized reference (skipped where no compiler
could build it; the layers then fall back to dequantized matmuls, also tested here)."""

from __future__ import annotations

import pytest
import torch

from mfmaccel.compress.quantize import quantize_model, uniform_plan
from mfmaccel.models import load_model
from mfmaccel.runtime.engine import greedy_generate
from mfmaccel.runtime.grid import QuantSpec, dequantize, quantize_rtn
from mfmaccel.runtime.kernels import KERNELS, int8_kernel
from mfmaccel.runtime.linear import QuantLinear

INT8 = QuantSpec(8, None, True)
needs_kernel = pytest.mark.skipif(int8_kernel() is None, reason="int8 kernel did not build")


def _layer(out: int, inp: int, bias: bool) -> QuantLinear:
    torch.manual_seed(0)
    weight = torch.randn(out, inp)
    return QuantLinear.from_quantized(quantize_rtn(weight, INT8),
                                      torch.randn(out) if bias else None)



@needs_kernel
@pytest.mark.parametrize("out,inp,bias", [(37, 100, True), (256, 576, False), (5, 7, True)])
def test_kernel_matches_the_dequantized_matmul(out, inp, bias):
    layer = _layer(out, inp, bias)
    assert layer.uses_int8_kernel
    x = torch.randn(1, 1, inp)
    fast = layer(x)
    reference = KERNELS.reference(lambda: layer(x))
    assert fast.shape == reference.shape == (1, 1, out)
    assert torch.allclose(fast, reference, rtol=1e-5, atol=1e-4)
    few = torch.randn(2, 3, inp)  # speculative verification: the kernel, row by row
    rows = torch.cat([layer(row.reshape(1, 1, inp)) for row in few.reshape(6, inp)])
    assert torch.equal(layer(few).reshape(6, out), rows.reshape(6, out))
    longer = torch.randn(2, 40, inp)  # prefill: dequantized on the fly, no fp32 copy kept
    assert torch.allclose(layer(longer), torch.nn.functional.linear(
        longer, layer.dequantized_weight(), layer.bias), atol=1e-5)
    assert layer._weight is None
    # the dequantized weight comes from the unpacked int8 rows, bit for bit the grid's own
    assert torch.equal(layer.dequantized_weight(), dequantize(layer.quantized()))


@needs_kernel
def test_greedy_tokens_equal_the_reference_on_a_tiny_llama():
    model = quantize_model(load_model("tiny-llama"), uniform_plan(load_model("tiny-llama").module,
                                                                  INT8))
    ids = torch.tensor([[5, 17, 33, 2]])
    with torch.inference_mode():
        fast = greedy_generate(model.module, ids, 12).tokens
        reference = KERNELS.reference(lambda: greedy_generate(model.module, ids, 12).tokens)
    assert list(fast) == list(reference)


def test_other_specs_never_take_the_kernel():
    for spec in (QuantSpec(8, None, False), QuantSpec(8, 64, True), QuantSpec(4, None, True)):
        layer = QuantLinear.from_quantized(quantize_rtn(torch.randn(8, 16), spec))
        assert not layer.uses_int8_kernel


@pytest.mark.parametrize("bias", [True, False])
def test_long_inputs_dequantize_by_blocks_and_match_the_whole_weight(monkeypatch, bias):
    """Prefill-length inputs take the block path (here 16 rows of the weight per block, so
    the 50 output rows span four blocks, the last one short) and agree with the product
    against the whole dequantized weight."""
    from mfmaccel.runtime import linear

    monkeypatch.setattr(linear, "PREFILL_BLOCK_BYTES", 16 * 4 * 24)
    layer = _layer(50, 24, bias)
    x = torch.randn(2, 40, 24)
    blocked = layer(x)
    reference = KERNELS.reference(lambda: layer(x))
    assert blocked.shape == (2, 40, 50)
    assert torch.allclose(blocked, reference, rtol=1e-5, atol=1e-5)
    assert layer._weight is None

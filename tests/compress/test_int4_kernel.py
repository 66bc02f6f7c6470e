"""The C++ 4-bit decode kernel against the dequantized reference: the layer, the greedy tokens
of a tiny model, the embedding lookup, and the specs it must leave alone."""

from __future__ import annotations

import pytest
import torch

from mfmaccel.compress.quantize import quantize_model, uniform_plan
from mfmaccel.models import load_model
from mfmaccel.runtime.embedding import QuantEmbedding
from mfmaccel.runtime.engine import greedy_generate
from mfmaccel.runtime.grid import QuantSpec, dequantize, quantize_rtn
from mfmaccel.runtime.kernels import KERNELS, int4_kernel
from mfmaccel.runtime.linear import QuantLinear

SPECS = [QuantSpec(4, 32, True), QuantSpec(4, 128, False), QuantSpec(4, 64, False),
         QuantSpec(4, None, True)]


def _layer(out: int, inp: int, spec: QuantSpec, bias: bool, cls=QuantLinear) -> QuantLinear:
    torch.manual_seed(0)
    return cls.from_quantized(quantize_rtn(torch.randn(out, inp), spec),
                              torch.randn(out) if bias else None)



def test_the_kernel_builds_with_its_fast_path():
    """The machines mfmaccel targets have AVX-512; without it 4-bit layers quietly dequantize,
    which is correct but would lose the speed this kernel exists for."""
    assert int4_kernel() is not None


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label)
@pytest.mark.parametrize("out,inp,bias", [(37, 256, True), (96, 512, False)])
def test_kernel_matches_the_dequantized_matmul(spec, out, inp, bias):
    layer = _layer(out, inp, spec, bias)
    assert layer.uses_int4_kernel
    x = torch.randn(1, 1, inp)
    fast = layer(x)
    assert layer._weight is None  # the kernel reads the nibbles: no fp32 copy is kept
    reference = KERNELS.reference(lambda: layer(x))
    assert fast.shape == reference.shape == (1, 1, out)
    assert torch.allclose(fast, reference, rtol=1e-5, atol=1e-4)
    few = torch.randn(2, 3, inp)  # speculative verification: each row as if it came alone
    rows = torch.cat([layer(row.reshape(1, 1, inp)) for row in few.reshape(6, inp)])
    assert torch.equal(layer(few).reshape(6, out), rows.reshape(6, out))
    longer = torch.randn(2, 40, inp)  # prefill: dequantized block by block
    assert torch.allclose(layer(longer), reference_product(layer, longer), atol=1e-4)


def reference_product(layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
    weight = dequantize(layer.quantized())
    return torch.nn.functional.linear(x, weight, layer.bias)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.label)
def test_rows_unpack_bit_for_bit_as_the_grid_dequantizes(spec):
    layer = _layer(20, 128, spec, False)
    assert torch.equal(layer.dequantized_weight(), dequantize(layer.quantized()))
    assert layer._weight is None
    reference = KERNELS.reference(layer.dequantized_weight)  # kept, as without the kernel
    assert torch.equal(reference, dequantize(layer.quantized())) and layer._weight is reference


def test_embedding_lookup_unpacks_only_the_rows_it_needs():
    table = _layer(50, 64, QuantSpec(4, 32, False), False, cls=QuantEmbedding)
    ids = torch.tensor([[3, 49, 3], [0, 7, 11]])
    assert torch.equal(table(ids), dequantize(table.quantized())[ids])
    assert table._weight is None


def test_greedy_tokens_equal_the_reference_on_a_tiny_llama():
    base = load_model("tiny-llama")
    model = quantize_model(base, uniform_plan(base.module, QuantSpec(4, 32, False)))
    assert any(getattr(m, "uses_int4_kernel", False) for m in model.module.modules())
    ids = torch.tensor([[5, 17, 33, 2]])
    with torch.inference_mode():
        fast = greedy_generate(model.module, ids, 12).tokens
        reference = KERNELS.reference(lambda: greedy_generate(model.module, ids, 12).tokens)
    assert list(fast) == list(reference)


@pytest.mark.parametrize("spec,inp", [(QuantSpec(3, 32, False), 128),  # not 4 bits
                                      (QuantSpec(4, 32, False), 96),  # rows not in steps of 64
                                      (QuantSpec(4, 96, False), 192),  # groups across steps
                                      (QuantSpec(4, 128, False), 192)])  # a ragged last group
def test_other_shapes_never_take_the_kernel(spec, inp):
    layer = _layer(8, inp, spec, True)
    assert not layer.uses_int4_kernel
    x = torch.randn(1, inp)
    assert torch.allclose(layer(x), reference_product(layer, x), atol=1e-5)

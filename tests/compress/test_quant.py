"""Quantizer grids, bit packing and GPTQ against round-to-nearest."""

from __future__ import annotations

import pytest
import torch

from mfmaccel.compress.gptq import HessianAccumulator, quantize_gptq
from mfmaccel.errors import UserInputError
from mfmaccel.runtime.grid import QuantSpec, dequantize, quantize_rtn
from mfmaccel.runtime.pack import pack_bits, packed_size, unpack_bits


@pytest.mark.parametrize("bits", range(2, 9))
def test_pack_round_trip_at_every_width(bits: int) -> None:
    values = torch.randint(0, 2**bits, (1003,), dtype=torch.int16)
    packed = pack_bits(values, bits)
    assert packed.numel() == packed_size(1003, bits)
    assert torch.equal(unpack_bits(packed, bits, 1003), values)


def test_pack_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        pack_bits(torch.tensor([0, 8]), 3)


@pytest.mark.parametrize("spec", [QuantSpec(4, 32), QuantSpec(3, None, True), QuantSpec(8, 64),
                                  QuantSpec(2, 48, True)])
def test_rtn_error_is_bounded_by_the_step(spec: QuantSpec) -> None:
    torch.manual_seed(0)
    weight = torch.randn(16, 100)  # 100 is not a multiple of the group sizes: padding path
    qt = quantize_rtn(weight, spec)
    assert qt.q.min() >= spec.qmin and qt.q.max() <= spec.qmax
    from mfmaccel.runtime.grid import expand

    step = expand(qt.scale, spec, 100)
    # half a step from rounding, up to another half at the range ends from the rounded zero
    bound = step / 2 if spec.symmetric else step
    assert ((dequantize(qt) - weight).abs() <= bound + 1e-6).all()


def test_more_bits_less_error_and_true_size() -> None:
    torch.manual_seed(0)
    weight = torch.randn(64, 256)
    errors = [float((dequantize(quantize_rtn(weight, QuantSpec(b, 64))) - weight).pow(2).mean())
              for b in (2, 3, 4, 8)]
    assert errors == sorted(errors, reverse=True)
    spec = QuantSpec(4, 64)
    assert spec.nbytes(64, 256) == 64 * 256 // 2 + 64 * 4 * 2 * 2  # ints + fp16 scale and zero
    assert spec.bits_per_weight(64, 256) == pytest.approx(4.5)


def test_unsupported_widths_are_user_errors() -> None:
    with pytest.raises(UserInputError, match="unsupported bit-width 1"):
        QuantSpec(1)
    with pytest.raises(UserInputError, match="group size"):
        QuantSpec(4, 0)


@pytest.mark.parametrize("spec", [QuantSpec(3, 32), QuantSpec(4, None, True), QuantSpec(2, 32)])
def test_gptq_beats_rtn_on_output_error(spec: QuantSpec) -> None:
    torch.manual_seed(0)
    inputs = torch.randn(1024, 96) @ torch.randn(96, 96)  # correlated, like real activations
    weight = torch.randn(48, 96)
    hessian = HessianAccumulator(96)
    hessian.add(inputs[:512])
    hessian.add(inputs[512:])

    def error(approx: torch.Tensor) -> float:
        return float((inputs @ weight.T - inputs @ approx.T).pow(2).mean())

    gptq = quantize_gptq(weight, hessian.hessian, spec)
    assert gptq.q.min() >= spec.qmin and gptq.q.max() <= spec.qmax
    assert error(dequantize(gptq)) < 0.8 * error(dequantize(quantize_rtn(weight, spec)))


@pytest.mark.parametrize("spec,in_features", [(QuantSpec(8, None, True), 24),
                                              (QuantSpec(4, 8), 24),  # rows on byte boundaries
                                              (QuantSpec(3, None, True), 13)])  # rows straddle
def test_quantized_rows_are_the_whole_matrix_rows(spec, in_features) -> None:
    from mfmaccel.runtime.linear import QuantLinear

    torch.manual_seed(0)
    layer = QuantLinear.from_quantized(quantize_rtn(torch.randn(10, in_features), spec))
    ids = torch.tensor([7, 0, 3])
    rows, whole = layer.quantized_rows(ids), layer.quantized()
    assert torch.equal(rows.q, whole.q[ids]) and torch.equal(rows.scale, whole.scale[ids])
    assert torch.equal(rows.zero, whole.zero[ids])

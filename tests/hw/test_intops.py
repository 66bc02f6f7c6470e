"""Integer kernels: exact where they must be (GEMM, requantization, i-sqrt), within measured
error bounds of float where they approximate (exp, softmax, GELU, SiLU, norms, rotary), and
loud where a value would leave the datapath."""

from __future__ import annotations

import math

import pytest
import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intops import (
    IExp,
    IGelu,
    ILayerNorm,
    IRMSNorm,
    IRotary,
    ISigmoid,
    dyadic,
    i_silu,
    i_softmax,
    i_sqrt,
    int_gemm,
    requantize,
    residual_add,
    rounding_shift,
)
from mfmaccel.hw.intops.activations import PROBABILITY_BITS
from mfmaccel.hw.intops.rotary import rotate_half


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_gemm_is_exact_and_refuses_what_int32_cannot_hold() -> None:
    a = torch.randint(-128, 128, (5, 64))
    w = torch.randint(-128, 128, (7, 64))
    bias = torch.randint(-2**20, 2**20, (7,))
    assert torch.equal(int_gemm(a, w, bias), (a @ w.t()) + bias)
    extreme = torch.full((1, 64), -128)
    assert int(int_gemm(extreme, extreme)[0, 0]) == 128 * 128 * 64
    with pytest.raises(OverflowError, match="accumulator"):
        int_gemm(torch.full((1, 1 << 17), -128), torch.full((1, 1 << 17), -128))
    with pytest.raises(OverflowError, match="GEMM input"):
        int_gemm(torch.tensor([[128]]), torch.tensor([[1]]))


def test_gemm_row_shifts_round_each_rows_bias() -> None:
    """Rows at per-token scales 2^s coarser take their bias rounded to that scale: exactly
    round-half-up of bias / 2^s, for every shift the 6-bit port can carry."""
    shifts = torch.arange(64)[:, None]
    bias = torch.tensor([2**31 - 1, -(2**31), 5, -5, 6, -6])
    got = int_gemm(torch.zeros(64, 1, dtype=torch.long), torch.zeros(6, 1, dtype=torch.long),
                   bias, shifts)
    exact = [[math.floor(b / 2**s + 0.5) for b in bias.tolist()] for s in range(64)]
    assert got.tolist() == exact
    assert torch.equal(rounding_shift(bias[None, :], shifts), got)


def test_requantization_rounds_to_nearest_and_saturates() -> None:
    acc = torch.randint(-2**31, 2**31, (20000,))
    for scale in (0.00012345, 3.1e-7, 0.9):
        factor = dyadic(scale)
        assert abs(factor.value / scale - 1) < 2**-29
        expected = torch.clamp(torch.floor(acc.double() * factor.value + 0.5), -128, 127)
        assert torch.equal(requantize(acc, factor), expected.long())
    halves = torch.tensor([-3, -1, 1, 3])  # x/2 lands on .5: half up
    assert rounding_shift(halves, 1).tolist() == [-1, 0, 1, 2]
    assert requantize(torch.tensor([2**31 - 1, -2**31]), dyadic(1.0)).tolist() == [127, -128]
    with pytest.raises(UserInputError, match="positive"):
        dyadic(0.0)


def test_residual_add_aligns_scales_then_rounds_once() -> None:
    a, b = torch.randint(-128, 128, (5000,)), torch.randint(-128, 128, (5000,))
    out = residual_add(a, 0.02, b, 0.031, 0.05)
    exact = (a.double() * 0.02 + b.double() * 0.031) / 0.05
    assert (out.double() - exact.clamp(-128, 127)).abs().max() <= 0.5 + 1e-6
    assert residual_add(torch.tensor([127]), 0.1, torch.tensor([127]), 0.1, 0.1).item() == 127


def test_i_exp_and_softmax_track_float() -> None:
    scale = 1 / 256
    q = torch.arange(-int(12 / scale), 1)
    unit = IExp.build(scale)
    assert (unit(q) * unit.scale_out - torch.exp(q.double() * scale)).abs().max() < 0.004
    x = torch.randn(64, 128) * 3
    for scale in (1 / 128, 1 / 1024):
        q = torch.round(x / scale).long()
        probs = i_softmax(q, IExp.build(scale), 8).double() / 256
        assert (probs - torch.softmax(q.double() * scale, -1)).abs().max() < 2 / 256
    equal = i_softmax(torch.zeros(3, 8, dtype=torch.long), IExp.build(1 / 64), 8)
    assert (equal == 32).all()  # 256 / 8: the 2^k numerator keeps the information
    peaked = i_softmax(torch.tensor([[0, -100000]]), IExp.build(1 / 64), 8)
    assert peaked.tolist() == [[255, 0]]  # saturates at the unsigned maximum
    fine = i_softmax(q, IExp.build(1 / 1024)).double() / 2**PROBABILITY_BITS  # the default
    assert (fine - torch.softmax(q.double() / 1024, -1)).abs().max() < 2 / 256


def test_i_exp_refuses_scales_the_datapath_cannot_take() -> None:
    with pytest.raises(UserInputError, match="coarser than ln 2"):
        IExp.build(1.0)
    with pytest.raises(UserInputError, match="too fine"):
        IExp.build(1e-6)


def test_i_gelu_sigmoid_and_silu_track_float() -> None:
    scale = 8 / 127
    q = torch.arange(-128, 128)
    x = q.double() * scale
    gelu = IGelu.build(scale)
    assert (gelu(q) * gelu.scale_out - torch.nn.functional.gelu(x)).abs().max() < 0.025
    sigmoid = ISigmoid.build(scale)
    assert (sigmoid(q) / 2**15 - torch.sigmoid(x)).abs().max() < 0.01
    assert (i_silu(q, sigmoid) * scale / 2**15 - torch.nn.functional.silu(x)).abs().max() < 0.012


def test_i_sqrt_is_exact_on_random_and_edge_values() -> None:
    n = torch.cat([torch.randint(0, 2**62, (20000,)), torch.randint(0, 1000, (2000,)),
                   torch.tensor([0, 1, 2, 3, 4, 15, 16, 17, 2**31 - 1, 2**62, 2**63 - 1])])
    assert i_sqrt(n).tolist() == [math.isqrt(v) for v in n.tolist()]
    with pytest.raises(ValueError):
        i_sqrt(torch.tensor([-1]))


def _row_data(width: int = 384):
    x = torch.randn(16, width) * 2 + 0.5
    scale_in = float(x.abs().max()) / 2**15
    return torch.round(x / scale_in).long(), scale_in


def test_layernorm_within_one_output_step_of_float() -> None:
    q, scale_in = _row_data()
    gamma, beta = torch.randn(384) * 0.2 + 1, torch.randn(384) * 0.1
    reference = torch.nn.functional.layer_norm(q.double() * scale_in, (384,), gamma.double(),
                                               beta.double(), 1e-5)
    scale_out = float(reference.abs().max()) / 127
    out = ILayerNorm.build(gamma, beta, scale_in, scale_out)(q)
    assert (out * scale_out - reference).abs().max() / scale_out < 1.0
    constant = ILayerNorm.build(gamma, beta, scale_in, scale_out)(torch.full((2, 384), 77))
    expected = torch.clamp(torch.round(beta.double() / scale_out), -128, 127)
    assert (constant - expected).abs().max() <= 1  # all-equal row: only beta is left


def test_rmsnorm_within_one_output_step_of_float() -> None:
    q, scale_in = _row_data()
    weight = torch.randn(384) * 0.2 + 1
    x = q.double() * scale_in
    reference = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * weight.double()
    scale_out = float(reference.abs().max()) / 127
    out = IRMSNorm.build(weight, scale_in, scale_out)(q)
    assert (out * scale_out - reference).abs().max() / scale_out < 1.0
    assert IRMSNorm.build(weight, scale_in, scale_out)(torch.zeros(1, 384)).abs().max() == 0
    with pytest.raises(OverflowError, match="RMSNorm input"):
        IRMSNorm.build(weight, scale_in, scale_out)(torch.full((1, 384), 2**30))


def test_rotary_within_half_a_step_of_float() -> None:
    positions, head_dim = 32, 64
    inverse = 1.0 / 10000 ** (torch.arange(0, head_dim, 2).double() / head_dim)
    angles = torch.outer(torch.arange(positions).double(), inverse)
    table = torch.cat([angles, angles], -1)
    rotary = IRotary.build(table.cos(), table.sin())
    q = torch.randint(-128, 128, (2, positions, head_dim))
    reference = q * table.cos() + rotate_half(q.double()) * table.sin()
    assert (rotary(q, torch.arange(positions)) - reference).abs().max() <= 0.51


def test_token_shifts_fit_each_row_with_the_smallest_shift() -> None:
    from mfmaccel.hw.intops import token_shifts

    x = torch.tensor([[3, -100], [1000, 5], [-40000, 2], [0, 0]])
    q, shift = token_shifts(x)
    assert shift.flatten().tolist() == [0, 3, 9, 0]  # bit lengths 7, 10, 16 (and nothing)
    assert q.tolist() == [[3, -100], [125, 1], [-78, 0], [0, 0]]
    assert q.abs().max() <= 127


def test_requantize_row_shift_equals_shifting_the_accumulator() -> None:
    """A row quantized with a per-token shift s comes out of the GEMM's requantization as if
    its accumulator had been 2^s larger."""
    from mfmaccel.hw.intops import Dyadic, requantize

    generator = torch.Generator().manual_seed(0)
    acc = torch.randint(-(1 << 20), 1 << 20, (4, 8), generator=generator)
    shift = torch.tensor([[0], [1], [5], [9]])
    factor = Dyadic(1 << 29, 40)
    assert torch.equal(requantize(acc, factor, row_shift=shift),
                       requantize(acc << shift, factor))

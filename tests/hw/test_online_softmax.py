"""Tiled (online-softmax) integer attention: identical to the untiled reference with one tile,
within a measured rounding bound with many, and still the float softmax(S) @ V underneath."""

from __future__ import annotations

import pytest
import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intops import IExp, exact_matmul
from mfmaccel.hw.intops.activations import EXP_FINEST_SCALE, PROBABILITY_BITS
from mfmaccel.hw.intops.datapath import DatapathOverflow
from mfmaccel.hw.intops.online_softmax import (
    attention_state_bytes,
    reference_attention,
    tiled_attention,
    untiled_score_bytes,
)

SCALE = 1 / 1024  # the i-exp input scale of the scores
ONE = 1 << PROBABILITY_BITS  # 1.0 at the probability scale: one step of v in the output
# Measured (seed 0, 300 rows, S in 64..257, tiles 8/16/32, scores uniform in +-8.0, v int8):
# |reference - tiled| reached 1814 LSBs of 2^-12 s_v, 0.44 of a v step (1.7 % of the row's
# largest output for S = 257, so a relative bound would have to grow with S). Most of it is the
# reference flooring every probability before the product; the rescales' own share (against the
# untiled sum normalised after the product), where i-exp(a) i-exp(-d) / peak is not exactly
# i-exp(a - d), reached 857. Bounds: under one v step in all, under half a step in the rescales.
TILED_BOUND = ONE
RESCALE_BOUND = ONE // 2


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _scores(rows: int, keys: int, span: float = 8.0) -> torch.Tensor:
    """Integer scores at the exp input scale, uniform in +-span real units."""
    return torch.round((torch.rand(rows, keys) * 2 - 1) * span / SCALE).long()


def _normalised_after(scores: torch.Tensor, v: torch.Tensor, exp: IExp) -> torch.Tensor:
    """The untiled sum normalised after the product, floor((e @ v) 2^k / sum e): what the
    tiled form computes when no rescale happens."""
    e = exp(scores - scores.amax(-1, keepdim=True))
    return torch.div(exact_matmul(e, v) << PROBABILITY_BITS, e.sum(-1, keepdim=True),
                     rounding_mode="floor")


def test_one_tile_is_the_untiled_sum_exactly_and_near_the_reference() -> None:
    """With tile >= S there is no rescale: the result is bit for bit floor((e @ v) 2^k / sum e).
    The reference floors each probability first, so it differs by rounding even here."""
    exp = IExp.build(SCALE)
    scores, v = _scores(50, 96), torch.randint(-128, 128, (96, 32))
    untiled = _normalised_after(scores, v, exp)
    assert torch.equal(tiled_attention(scores, v, exp, 96), untiled)
    assert torch.equal(tiled_attention(scores, v, exp, 1000), untiled)
    assert int((untiled - reference_attention(scores, v, exp)).abs().max()) < TILED_BOUND
    batched, v_batched = _scores(2 * 3 * 7, 40).view(2, 3, 7, 40), torch.randint(
        -128, 128, (2, 3, 40, 16))
    assert torch.equal(tiled_attention(batched, v_batched, exp, 40),
                       _normalised_after(batched, v_batched, exp))
    assert int((tiled_attention(batched, v_batched, exp, 40) - reference_attention(
        batched, v_batched, exp)).abs().max()) < TILED_BOUND


@pytest.mark.parametrize("keys", [64, 100, 128, 200, 257])
@pytest.mark.parametrize("tile", [8, 16, 32])
def test_many_tiles_match_the_reference_within_rounding(keys: int, tile: int) -> None:
    exp = IExp.build(SCALE)
    scores, v = _scores(300, keys), torch.randint(-128, 128, (keys, 64))
    tiled = tiled_attention(scores, v, exp, tile)
    assert int((tiled - reference_attention(scores, v, exp)).abs().max()) < TILED_BOUND
    assert int((tiled - _normalised_after(scores, v, exp)).abs().max()) < RESCALE_BOUND


def test_float_meaning_is_softmax_times_v() -> None:
    exp = IExp.build(SCALE)
    scores, v = _scores(200, 150), torch.randint(-128, 128, (150, 48))
    tiled = tiled_attention(scores, v, exp, 16).double() / ONE
    exact = torch.softmax(scores.double() * SCALE, -1) @ v.double()
    assert (tiled - exact).abs().max() < 0.5  # measured 0.14; i-exp's own error is ~0.4 %


def test_max_in_a_late_tile_rescales_the_state() -> None:
    exp = IExp.build(SCALE)
    scores, v = _scores(120, 130, span=4.0), torch.randint(-128, 128, (130, 24))
    scores[:, 120:] += round(3.0 / SCALE)  # the last tile holds every row's maximum
    tiled = tiled_attention(scores, v, exp, 16)
    assert int((tiled - reference_attention(scores, v, exp)).abs().max()) < TILED_BOUND
    assert int((tiled - _normalised_after(scores, v, exp)).abs().max()) < RESCALE_BOUND
    assert not torch.equal(tiled, _normalised_after(scores, v, exp))  # the rescale did round
    # a late maximum 30.0 above the rest: exp(-d) is 0, the earlier state is wiped
    peaked = torch.zeros(1, 64, dtype=torch.long)
    peaked[0, 63] = round(30.0 / SCALE)
    values = torch.randint(-128, 128, (64, 8))
    assert torch.equal(tiled_attention(peaked, values, exp, 8)[0], values[63] * ONE)
    assert int((reference_attention(peaked, values, exp)[0] - values[63] * (ONE - 1))
               .abs().max()) == 0  # the reference saturates the probability at 2^k - 1


def test_max_in_the_first_tile_needs_no_rescale() -> None:
    exp = IExp.build(SCALE)
    scores, v = _scores(120, 130, span=4.0), torch.randint(-128, 128, (130, 24))
    scores[:, :16] += round(3.0 / SCALE)  # the first tile holds every row's maximum
    tiled = tiled_attention(scores, v, exp, 16)
    assert torch.equal(tiled, _normalised_after(scores, v, exp))  # exp(0) = peak: identity
    assert int((tiled - reference_attention(scores, v, exp)).abs().max()) < TILED_BOUND


def test_worst_case_widths_stay_inside_int64() -> None:
    """Equal scores (every exp at its peak), v at -128, the finest scale and 4096 keys, then a
    maximum one step higher in the last tile: the widest sum, accumulator and rescale the
    documented widths allow (old * r alone would need 79 bits here)."""
    exp = IExp.build(EXP_FINEST_SCALE)
    scores = torch.zeros(2, 4096, dtype=torch.long)
    scores[1, -1] = 1
    v = torch.full((4096, 4), -128)
    assert (tiled_attention(scores, v, exp, 512) == -128 * ONE).all()  # the float answer
    # the reference floors 4095 probabilities of a hair under 1/4096 to 0 in the second row
    assert reference_attention(scores, v, exp).tolist() == [[-128 * ONE] * 4, [-128] * 4]
    mixed = torch.randint(-128, 128, (4096, 4))
    exact = torch.softmax(scores.double() * EXP_FINEST_SCALE, -1) @ mixed.double() * ONE
    assert (tiled_attention(scores, mixed, exp, 512) - exact).abs().max() <= 2


def test_bad_arguments_raise_one_clear_line() -> None:
    exp = IExp.build(SCALE)
    scores, v = _scores(4, 16), torch.randint(-128, 128, (16, 8))
    for tile in (0, -3, 2.5):
        with pytest.raises(UserInputError, match="tile must be a positive integer"):
            tiled_attention(scores, v, exp, tile)  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="16 key columns but v has 15 rows"):
        tiled_attention(scores, v[:15], exp, 4)
    with pytest.raises(UserInputError, match="integer tensors"):
        reference_attention(scores.double(), v, exp)
    with pytest.raises(DatapathOverflow, match="attention value v"):
        tiled_attention(scores, v * 2, exp, 4)


def test_state_bytes_do_not_grow_with_the_key_length() -> None:
    tiled = attention_state_bytes(rows=64, d=128, tile=32)
    assert tiled == 64 * 32 * 4 + 64 * (4 + 8 + 128 * 8)
    assert untiled_score_bytes(rows=64, keys=4096) == 64 * 4096 * 4
    assert tiled < untiled_score_bytes(rows=64, keys=4096)
    with pytest.raises(UserInputError, match="positive"):
        attention_state_bytes(rows=64, d=128, tile=0)

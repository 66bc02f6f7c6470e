"""Memory-efficient attention in integers: the softmax-times-V of attention computed one key
tile at a time with an online (running-max) softmax, so the (L, S) score matrix never has to
be on chip.

The untiled form (`reference_attention`) needs a whole score row before it can normalise: P =
i_softmax(S) takes the row maximum and the row sum, then context = P @ V. The tiled form
(`tiled_attention`) reads `tile` score columns and `tile` rows of V at a time and keeps, per
query row, only two integers and a D-vector: the running maximum m, the running exp sum l, and
the unnormalised accumulator acc = sum_j e_j v_j (e_j = exp(s_j - m)). When a tile raises the
maximum by d > 0, l and acc are rescaled by exp(-d), taken from the same i-exp unit (r =
exp(-d), `exp.peak` meaning 1.0): new = floor(old r / peak). At the end, context =
floor((acc << k) / l).

The two forms differ by rounding. The reference floors each probability (e_j 2^k / l) before the
product with V, and clamps it at 2^k - 1: every key may lose up to one step (at k = 12, 4095 keys a
hair below a 4096th floor to probability 0, that one to 1 / 4096). The tiled form multiplies first
and divides once at the end, so it is, if anything, closer to the float softmax(S) @ V; each rescale
adds a floor and the (small) gap between i-exp(a) i-exp(-d) / peak and i-exp(a - d). Hence even with
one tile (tile >= S) the tiled result is not the reference's but the untiled sum normalised after
the product, bit for bit; where the maximum sits in the first tile, r = peak makes every rescale an
identity and the same holds for any tile.

Widths assumed (the hardware's registers; each is asserted with `check_range`): scores int32;
e below 2^31 (`IExp.build` guarantees the peak fits int32); l at 32 + ceil(log2 S) bits, as in
`i_softmax`; acc at 39 + ceil(log2 S) bits (a 31-bit e times an int8 v, summed over S); the
final numerator acc << k within int64. The rescale product old * r would need up to
63 + log2 S bits, so it is computed as q r + floor(rem r / peak) with old = q peak + rem, which
is exactly floor(old r / peak) and never exceeds max(|old| + peak, peak^2) < 2^62.
"""

from __future__ import annotations

import math

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.intops.activations import PROBABILITY_BITS, IExp, i_softmax
from mfmaccel.hw.intops.datapath import INT8, INT32, IntRange, check_range, exact_matmul

SCORE_BYTES = 4  # an int32 score (and the exp of it, below 2^31, in the same slot)
MAX_BYTES = 4  # the running maximum is a score
SUM_BYTES = 8  # the running sum needs 32 + log2(S) bits


def _check_inputs(scores: torch.Tensor, v: torch.Tensor) -> None:
    """Refuse shapes and values the kernels cannot take, with one line naming the fix."""
    if scores.is_floating_point() or v.is_floating_point():
        raise UserInputError("attention scores and v must be integer tensors; quantize them "
                             "first (scores at the i-exp's input scale, v int8)")
    if scores.dim() < 2 or v.dim() < 2:
        raise UserInputError(f"scores must be (..., L, S) and v (..., S, D); got shapes "
                             f"{tuple(scores.shape)} and {tuple(v.shape)}")
    if scores.shape[-1] != v.shape[-2]:
        raise UserInputError(f"scores has {scores.shape[-1]} key columns but v has "
                             f"{v.shape[-2]} rows; pass v with one row per key (..., S, D)")
    if scores.shape[-1] < 1:
        raise UserInputError("scores has no key columns; attention needs at least one key")
    try:
        torch.broadcast_shapes(scores.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise UserInputError(f"the leading dimensions of scores {tuple(scores.shape[:-2])} "
                             f"and v {tuple(v.shape[:-2])} do not broadcast; give both the "
                             "same batch and head dimensions") from None
    check_range(scores, INT32, "attention score")
    check_range(v, INT8, "attention value v")


def reference_attention(scores: torch.Tensor, v: torch.Tensor, exp: IExp,
                        out_bits: int = PROBABILITY_BITS) -> torch.Tensor:
    """The untiled integer attention, i_softmax(scores) @ v: int64 at scale 2^-out_bits * s_v.
    It needs every score of a row on chip at once; `tiled_attention` is checked against it."""
    _check_inputs(scores, v)
    return exact_matmul(i_softmax(scores, exp, out_bits), v)


def _rescale(old: torch.Tensor, r: torch.Tensor, peak: int) -> torch.Tensor:
    """floor(old * r / peak) for 0 <= r <= peak without the wide product: with old = q peak +
    rem (0 <= rem < peak), it is q r + floor(rem r / peak), every term below 2^62."""
    q = torch.div(old, peak, rounding_mode="floor")
    rem = old - q * peak
    return q * r + torch.div(rem * r, peak, rounding_mode="floor")


def tiled_attention(scores: torch.Tensor, v: torch.Tensor, exp: IExp, tile: int,
                    out_bits: int = PROBABILITY_BITS) -> torch.Tensor:
    """`reference_attention` computed `tile` keys at a time with only per-row state (running
    max, running exp sum, unnormalised accumulator), so the score row never has to fit on
    chip. int64 at scale 2^-out_bits * s_v, like the reference, and within its rounding (module
    docstring); with tile >= S it is the untiled sum normalised after the product, exactly."""
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise UserInputError(f"tile must be a positive integer number of keys, got {tile!r}; "
                             "pass e.g. tile=32")
    _check_inputs(scores, v)
    keys = scores.shape[-1]
    log_keys = math.ceil(math.log2(keys))
    sum_width = IntRange(32 + log_keys)
    acc_width = IntRange(39 + log_keys)
    scores, v = scores.long(), v.long()
    m = l_sum = acc = None
    for start in range(0, keys, tile):
        s_tile, v_tile = scores[..., start:start + tile], v[..., start:start + tile, :]
        tile_max = s_tile.amax(-1, keepdim=True)
        if m is None:
            m = tile_max
        else:  # exp(0) = peak makes the rescale an identity where the maximum did not rise
            new_m = torch.maximum(m, tile_max)
            r = check_range(exp(m - new_m), INT32, "rescale factor exp(-d)")
            l_sum, acc = _rescale(l_sum, r, exp.peak), _rescale(acc, r, exp.peak)
            m = new_m
        e = check_range(exp(s_tile - m), INT32, "tile exp")
        tile_sum, tile_acc = e.sum(-1, keepdim=True), exact_matmul(e, v_tile)
        l_sum = tile_sum if l_sum is None else l_sum + tile_sum
        acc = tile_acc if acc is None else acc + tile_acc
        check_range(l_sum, sum_width, "running exp sum")
        check_range(acc, acc_width, "attention accumulator")
    check_range(acc, IntRange(64 - out_bits), "attention numerator acc << out_bits")
    return torch.div(acc << out_bits, l_sum, rounding_mode="floor")


def attention_state_bytes(rows: int, d: int, tile: int, acc_bytes: int = 8) -> int:
    """On-chip bytes the tiled form needs for a block of `rows` query rows with head width `d`:
    one (rows, tile) score tile of int32 (its exps overwrite it in place) and per row the state,
    a 4-byte max, an 8-byte sum and a d-vector accumulator of `acc_bytes` each. Independent of
    the key length S, unlike `untiled_score_bytes`, its counterpart in the performance model."""
    if min(rows, d, tile, acc_bytes) < 1:
        raise UserInputError(f"rows, d, tile and acc_bytes must be positive, got {rows}, {d}, "
                             f"{tile}, {acc_bytes}")
    return rows * tile * SCORE_BYTES + rows * (MAX_BYTES + SUM_BYTES + d * acc_bytes)


def untiled_score_bytes(rows: int, keys: int) -> int:
    """On-chip bytes the untiled form needs for `rows` query rows: the whole int32 score rows,
    rows x S x 4, which grows with the key length S."""
    if min(rows, keys) < 1:
        raise UserInputError(f"rows and keys must be positive, got {rows}, {keys}")
    return rows * keys * SCORE_BYTES

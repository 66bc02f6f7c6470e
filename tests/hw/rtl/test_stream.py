"""The streaming units (`hw.rtl.stream_*`) bit-exact against `hw.intops` on hundreds of rows of
realistic lengths plus edge rows, with stalling handshakes, at two configurations; their
cycle counts equal to the documented formulas; rows a unit cannot hold refused in one line."""

from __future__ import annotations

import shutil

import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.hw.rtl.config import RtlConfig
from mfmaccel.hw.rtl.stream_attention import stream_attention_cycles
from mfmaccel.hw.rtl.stream_cases import Batch
from mfmaccel.hw.rtl.stream_heads import attention_batch, rotary_batch
from mfmaccel.hw.rtl.stream_norm import stream_layernorm_cycles
from mfmaccel.hw.rtl.stream_rows import softmax_batch
from mfmaccel.hw.rtl.stream_softmax import stream_softmax_cycles
from mfmaccel.hw.rtl.stream_verify import STREAM_UNITS, unit_batch, verify_stream

needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None,
                                  reason="iverilog is not installed (make test installs it)")
CONFIG = RtlConfig()  # 8 lanes, rows up to 1,024, attention tiles of 32 keys, head width 64
# random rows per unit: lengths 64..1,024 (attention: 32..384 keys, its cycles grow 2 per key)
ROWS = {"stream_softmax": 200, "stream_layernorm": 200, "stream_rmsnorm": 200,
        "stream_silu": 200, "stream_rotary": 300, "stream_attention": 100}
LENGTHS = {"stream_attention": (32, 384)}
SMALL = RtlConfig(stream_lanes=3, max_row=100, rotary_dim=12, attn_head_dim=6, attn_tile=5,
                  silu_shift=2, silu_bits=12, silu_input_scale=1 / 256)


def _passes(name: str, cfg: RtlConfig, batch: Batch, tmp_path, *, stall: bool = False):
    outcome = verify_stream(name, cfg, tmp_path, batch, stall=stall, seed=3)
    assert outcome.rows == batch.stimulus.rows > 0
    assert outcome.mismatches == 0, outcome.first_mismatch
    assert outcome.cycle_errors == 0, outcome.first_mismatch
    return outcome


@needs_icarus
@pytest.mark.parametrize("name", sorted(STREAM_UNITS))
def test_unit_is_bit_exact_on_hundreds_of_rows(name: str, tmp_path) -> None:
    batch = unit_batch(name, CONFIG, rows_count=ROWS[name], seed=7,
                       lengths=LENGTHS.get(name, (64, 1024)))
    outcome = _passes(name, CONFIG, batch, tmp_path)
    assert max(outcome.lengths) == (CONFIG.rotary_dim if name == "stream_rotary"
                                    else CONFIG.max_row)  # the edge rows ran
    assert min(outcome.lengths) == (CONFIG.rotary_dim if name == "stream_rotary" else 1)


@needs_icarus
@pytest.mark.parametrize("name", sorted(STREAM_UNITS))
def test_unit_survives_stalls_on_both_handshakes(name: str, tmp_path) -> None:
    """in_valid and out_ready drop at random: the same rows come out, only later."""
    batch = unit_batch(name, CONFIG, rows_count=20, seed=11, edges=False, lengths=(40, 300))
    stalled = _passes(name, CONFIG, batch, tmp_path, stall=True)
    unit = STREAM_UNITS[name]
    assert sum(stalled.cycles) > sum(unit.cycles(CONFIG, n) for n in stalled.lengths)


@needs_icarus
@pytest.mark.parametrize("name", sorted(STREAM_UNITS))
def test_unit_generalises_to_odd_lanes_and_small_buffers(name: str, tmp_path) -> None:
    """3 lanes (partial last beats everywhere), max_row 100, 5-key tiles, a coarser sigmoid."""
    batch = unit_batch(name, SMALL, rows_count=40, seed=5, lengths=(1, 100))
    _passes(name, SMALL, batch, tmp_path, stall=True)
    _passes(name, SMALL, batch, tmp_path / "steady")


@needs_icarus
def test_a_wrong_expectation_is_caught(tmp_path) -> None:
    """The comparison can fail: one golden value off by one is reported with its row."""
    batch = softmax_batch(CONFIG, [[0, 5, -3] * 30, [1] * 9])
    batch.expected[1][4] += 1
    outcome = verify_stream("stream_softmax", CONFIG, tmp_path, batch)
    assert outcome.mismatches == 1 and outcome.first_mismatch.startswith("row 1")


def test_rows_longer_than_the_unit_holds_are_refused() -> None:
    small = RtlConfig(max_row=64)
    with pytest.raises(UserInputError, match=r"exceeds max_row=64; .* max_row >= 65"):
        softmax_batch(small, [[0] * 10, [1] * 65])
    import torch

    with pytest.raises(UserInputError, match=r"max_row >= 70"):
        attention_batch(small, [(torch.zeros(70, small.attn_head_dim, dtype=torch.long),
                                 [[0] * 70])])
    with pytest.raises(UserInputError, match=r"rotary_dim=64; .* rotary_dim=48"):
        rotary_batch(CONFIG, [(3, [0] * 48)])


def test_impossible_streaming_parameters_are_refused() -> None:
    with pytest.raises(UserInputError, match="rotary_dim .* multiple of 2 x stream_lanes"):
        RtlConfig(rotary_dim=60)
    with pytest.raises(UserInputError, match="attn_head_dim .* multiple of stream_lanes"):
        RtlConfig(attn_head_dim=60)
    with pytest.raises(UserInputError, match="max_row must be a positive integer"):
        RtlConfig(max_row=0)
    with pytest.raises(UserInputError, match="silu_bits"):
        RtlConfig(silu_bits=18)


def test_cycle_formulas_count_beats_passes_and_tiles() -> None:
    """The formulas the simulations are held to, cycle for cycle."""
    assert stream_softmax_cycles(CONFIG, 1) == 6
    assert stream_softmax_cycles(CONFIG, 1024) == 3 * 128 + 3
    assert stream_layernorm_cycles(CONFIG, 768) - stream_layernorm_cycles(CONFIG, 760) == 2
    assert stream_attention_cycles(CONFIG, 64) == 2 * 64 + 2 * (8 + 1) + 8 + 1
    assert stream_attention_cycles(CONFIG, 65) == 2 * 65 + 3 * (8 + 1) + 8 + 1

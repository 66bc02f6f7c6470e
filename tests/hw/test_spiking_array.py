"""The spiking accelerator variant against the integer accelerator (hw.spiking_array): ACs are
spikes x fan-out, energy is affine in the spikes and meets the integer energy at the break-even
rate, step-major streaming, membrane updates that cost even without spikes, bad input."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.hw.arch import PRESETS, Arch, get_arch, spiking_variant
from mfmaccel.hw.ops import Workload
from mfmaccel.hw.simulate import simulate
from mfmaccel.hw.spiking_array import (
    NEURON_ADDS,
    STATE_BYTES,
    SpikeFeed,
    SpikeGemm,
    at_rate,
    compare,
    grouped,
    spike_bits,
    weight_gemm,
)

EDGE = get_arch("edge")


def _gemm(name: str = "g", *, spikes: float = 1000, m: int = 64, k: int = 64, n: int = 64
          ) -> SpikeGemm:
    return weight_gemm(name, "projection", population=f"{name}.in", spikes=spikes,
                       neurons=m * k, m=m, k=k, n=n)


def _total(gemm: SpikeGemm, steps: int = 4) -> float:
    return compare([gemm], EDGE, steps=steps, levels=16).spiking.total_pj


def test_the_variant_keeps_the_preset_but_its_array() -> None:
    variant = spiking_variant(EDGE)
    assert PRESETS["edge"].array == "mac" and variant.array == "accumulate"
    assert (variant.rows, variant.cols, variant.b_buffer_kib, variant.bandwidth_gbs) == \
        (EDGE.rows, EDGE.cols, EDGE.b_buffer_kib, EDGE.bandwidth_gbs)
    assert variant.vector_lanes >= variant.cols and variant.name == "edge-spiking"


def test_accumulates_are_spikes_times_the_row_they_meet() -> None:
    result = compare([_gemm(spikes=1234, n=48)], EDGE, steps=3, levels=16)
    row = result.gemms[0]
    assert row.accumulates == row.spiking.operations == 1234 * 48
    assert row.spiking.energy_pj["ac"] == pytest.approx(1234 * 48 * EDGE.tech.add32_pj)
    assert row.macs == 64 * 64 * 48
    assert row.spike_rate == pytest.approx(1234 / (64 * 64 * 3))


def test_attention_feeds_each_meet_their_own_fan_out() -> None:
    """A context product: probabilities meet v rows (head width), v spikes probability
    columns (length); one set of accumulators for both."""
    feeds = (SpikeFeed(population="probs", spikes=10, neurons=32 * 32, fan_out=8,
                       stationary_bytes=32 * 8, value_bytes=1),
             SpikeFeed(population="v", spikes=5, neurons=32 * 8, fan_out=32,
                       stationary_bytes=32 * 32 * 2, value_bytes=2))
    gemm = SpikeGemm(name="context", role="attention-context", m=32, k=32, n=8, feeds=feeds,
                     weight_bits=None)
    row = compare([gemm], EDGE, steps=2, levels=None).gemms[0]
    assert row.accumulates == 10 * 8 + 5 * 32
    assert gemm.states == 32 * 8


def test_energy_is_affine_in_spikes_and_meets_the_integer_at_break_even() -> None:
    zero, one, two = (_total(_gemm(spikes=s), steps=1) for s in (0, 5000, 10000))
    assert two - one == pytest.approx(one - zero)
    result = compare([_gemm(spikes=5000)], EDGE, steps=1, levels=16)
    row = result.gemms[0]
    assert one - zero == pytest.approx(5000 * row.pj_per_spike)
    assert row.fixed_pj == pytest.approx(zero)
    assert row.break_even_rate > 0
    even = compare(at_rate([_gemm(spikes=5000)], row.break_even_rate, steps=1), EDGE,
                   steps=1, levels=16)
    assert even.spiking.total_pj == pytest.approx(even.integer.total_pj, rel=1e-9)
    assert even.spike_rate == pytest.approx(row.break_even_rate)


def test_the_overall_break_even_keeps_the_measured_mix() -> None:
    gemms = [_gemm("a", spikes=3000), _gemm("b", spikes=100, m=32, k=64, n=128)]
    result = compare(gemms, EDGE, steps=1, levels=4)
    assert result.break_even_rate > 0
    even = compare(at_rate(gemms, result.break_even_rate, steps=1), EDGE, steps=1, levels=4)
    assert even.spiking.total_pj == pytest.approx(even.integer.total_pj, rel=1e-9)
    spikes = [g.spikes for g in at_rate(gemms, 0.5, steps=1)]
    assert spikes[0] / spikes[1] == pytest.approx(30)


def test_when_nothing_firing_already_costs_more_no_rate_pays() -> None:
    result = compare([_gemm(spikes=0)], EDGE, steps=400, levels=16)
    assert result.fixed_share > 1
    assert result.break_even_rate == 0 == result.gemms[0].break_even_rate


@pytest.mark.parametrize("steps", [1, 7])
def test_weights_that_do_not_fit_stream_every_step(steps: int) -> None:
    """edge's B buffer holds 128 KiB: 4 KiB of weights load once, 256 KiB stream each step
    (few rows, so the accumulators and membranes stay on chip)."""
    small, big = _gemm("small", m=4, k=64, n=64), _gemm("big", m=4, k=512, n=512)
    rows = compare([small, big], EDGE, steps=steps, levels=16).gemms
    assert [r.stationary_on_chip for r in rows] == [[True], [False]]
    assert all(r.state_on_chip for r in rows)
    assert rows[0].spiking.dram_bytes == 64 * 64
    assert rows[1].spiking.dram_bytes == steps * 512 * 512


def test_weights_that_fit_alone_but_not_together_stream_one() -> None:
    """Step-major: every GEMM works every step, so the B buffer must hold all kept weights."""
    first, second = _gemm("a", m=4, k=384, n=256), _gemm("b", m=4, k=384, n=256)
    rows = compare([first, second], EDGE, steps=5, levels=16).gemms
    assert sorted(r.stationary_on_chip[0] for r in rows) == [False, True]
    assert sorted(r.spiking.dram_bytes for r in rows) == [384 * 256, 5 * 384 * 256]


def test_zero_spikes_still_update_every_membrane() -> None:
    steps, gemm = 3, _gemm(spikes=0, m=4)
    row = compare([gemm], EDGE, steps=steps, levels=16).gemms[0]
    assert row.spiking.energy_pj["ac"] == 0 and row.accumulates == 0
    updates = steps * gemm.states
    assert row.spiking.energy_pj["neuron"] == pytest.approx(
        updates * NEURON_ADDS * EDGE.tech.add32_pj)
    assert row.spiking.sram_bytes >= 2 * STATE_BYTES * updates > 0
    assert row.pj_per_spike > 0 and row.spiking.compute_cycles > 0


def test_states_the_out_buffer_cannot_hold_spill_every_step() -> None:
    gemm = _gemm(m=1024, k=64, n=64)  # 4 Mi outputs x 8 bytes: far past edge's 64 KiB
    row = compare([gemm], EDGE, steps=2, levels=16).gemms[0]
    assert not row.state_on_chip
    assert row.spiking.dram_bytes == 64 * 64 + 2 * 2 * STATE_BYTES * 1024 * 64


def test_spike_maps_carry_the_levels() -> None:
    assert (spike_bits(1), spike_bits(16), spike_bits(None)) == (2, 6, 8)
    coarse, fine = (compare([_gemm()], EDGE, steps=2, levels=lv).spiking.sram_bytes
                    for lv in (1, 16))
    assert fine - coarse == pytest.approx(2 * 2 * 64 * 64 * (6 - 2) / 8)


def test_equal_throughput_needs_adders_for_every_add() -> None:
    result = compare([_gemm(spikes=200_000)], EDGE, steps=4, levels=16)
    adds = result.accumulates + NEURON_ADDS * 4 * 64 * 64
    assert result.adders["equal_throughput"] * result.integer.cycles >= adds
    assert result.area_mm2["adder_array"] < result.area_mm2["mac_array"]
    assert result.latency_ms["spiking"] > 0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(UserInputError, match="steps must be at least 1"):
        compare([_gemm()], EDGE, steps=0, levels=16)
    with pytest.raises(UserInputError, match="spikes must be at least 0"):
        _gemm(spikes=-1)
    with pytest.raises(UserInputError, match="levels must be at least 1"):
        compare([_gemm()], EDGE, steps=1, levels=0)
    with pytest.raises(UserInputError, match="no spike-fed GEMMs"):
        compare([], EDGE, steps=1, levels=16)
    with pytest.raises(UserInputError, match="already a spiking variant"):
        compare([_gemm()], spiking_variant(EDGE), steps=1, levels=16)
    with pytest.raises(UserInputError, match="compare an integer accelerator"):
        compare([_gemm()], EDGE, steps=1, levels=16, spiking=EDGE)
    with pytest.raises(UserInputError, match="on one technology"):
        compare([_gemm()], EDGE, steps=1, levels=16,
                spiking=spiking_variant(get_arch("swifttron")))
    with pytest.raises(UserInputError, match="role must be one of"):
        SpikeGemm(name="x", role="conv2d", m=1, k=1, n=1, feeds=_gemm().feeds)
    with pytest.raises(UserInputError, match="rate must be at least 0"):
        at_rate([_gemm()], -0.1, steps=1)


def test_an_accumulate_array_is_named_and_runs_no_integer_workload() -> None:
    with pytest.raises(UserInputError, match="array must be 'mac' or 'accumulate'"):
        Arch("x", 4, 4, 1, 1, 1, 1, 1, array="analog")
    with pytest.raises(UserInputError, match="already a spiking variant"):
        spiking_variant(spiking_variant(EDGE))
    with pytest.raises(UserInputError, match="accumulate-only array"):
        simulate(Workload("m", "none"), spiking_variant(EDGE))
    assert replace(EDGE, array="mac") == EDGE


def test_groups_add_up_to_the_whole() -> None:
    gemms = [_gemm("0.a", spikes=3000), _gemm("1.a", spikes=10), _gemm("0.b", spikes=0)]
    result = compare(gemms, EDGE, steps=2, levels=16)
    groups = grouped(result, lambda name: name.split(".")[1])
    assert list(groups) == ["a", "b"] and groups["a"].gemms == 2
    assert sum(g.spiking_uj for g in groups.values()) == pytest.approx(
        result.spiking.total_pj * 1e-6)
    whole = grouped(result, lambda name: "all")["all"]
    assert whole.break_even_rate == pytest.approx(result.break_even_rate)
    assert whole.spike_rate == pytest.approx(result.spike_rate)


def test_on_chip_keeps_everything_and_only_the_spikes_grow_energy() -> None:
    big = _gemm("big", m=1024, k=512, n=512)
    bounded = compare([big], EDGE, steps=3, levels=16).gemms[0]
    ideal = compare([big], EDGE, steps=3, levels=16, on_chip=True)
    assert not bounded.state_on_chip and bounded.stationary_on_chip == [False]
    assert ideal.on_chip and ideal.gemms[0].state_on_chip and ideal.spiking.dram_bytes == 512 * 512
    assert ideal.spiking.total_pj < bounded.spiking.total_pj
    parts = bounded.spiking.energy_pj
    assert bounded.fixed_pj == pytest.approx(
        bounded.spiking.total_pj - parts["ac"] - parts["stationary_reads"])

"""A speed change within the measurement's noise is shown as no change, in the table and
the latency plots."""

from __future__ import annotations

from mfmaccel.records import Metrics
from mfmaccel.report.plots import _prefill_ms, _steady
from mfmaccel.report.rows import (
    TIMING_NOISE,
    WITHIN_NOISE,
    Point,
    decode_cell,
    prefill_cell,
    relative_spread,
    timing_noise,
    within_noise,
)


def speed(prefill: float, decode: float = 40.0, prefill_runs: list[float] | None = None
          ) -> Metrics:
    details = {"speed": {"prefill_seconds_runs": prefill_runs}} if prefill_runs else {}
    return Metrics(quality={"ppl": 17.0}, weight_bytes=1, prefill_seconds=prefill,
                   decode_tokens_per_s=decode, details=details)


def test_without_recorded_repeats_the_stated_threshold_applies() -> None:
    assert TIMING_NOISE == 0.10
    assert timing_noise(speed(0.100), speed(0.109), "prefill_seconds") == TIMING_NOISE
    assert within_noise(speed(0.100), speed(0.109), "prefill_seconds")
    assert not within_noise(speed(0.100), speed(0.119), "prefill_seconds")  # the +19%
    assert within_noise(speed(0.1, decode=40.0), speed(0.1, decode=37.0), "decode_tokens_per_s")
    assert not within_noise(speed(0.1), Metrics(), "prefill_seconds")  # nothing to compare


def test_recorded_repeats_set_the_noise() -> None:
    assert relative_spread([0.10, 0.13, 0.11]) == (0.13 - 0.10) / 0.11
    assert relative_spread([0.1]) is None and relative_spread([]) is None
    wide = speed(0.100, prefill_runs=[0.09, 0.10, 0.12])  # 30% spread
    tight = speed(0.119, prefill_runs=[0.118, 0.119, 0.120])
    assert timing_noise(wide, tight, "prefill_seconds") == (0.12 - 0.09) / 0.10
    assert within_noise(wide, tight, "prefill_seconds")  # +19% inside a 30% spread
    steady = speed(0.100, prefill_runs=[0.1, 0.1, 0.1])
    # steady repeats are no proof of steady runs minutes apart: never tighter than TIMING_NOISE
    assert timing_noise(steady, speed(0.105, prefill_runs=[0.105] * 3),
                        "prefill_seconds") == TIMING_NOISE
    assert within_noise(steady, speed(0.105, prefill_runs=[0.105] * 3), "prefill_seconds")
    assert not within_noise(steady, speed(0.119, prefill_runs=[0.119] * 3), "prefill_seconds")


def test_table_cells_show_noise_as_no_change() -> None:
    noisy = prefill_cell(speed(0.100), speed(0.105))
    assert noisy.verdict == "same" and noisy.change == WITHIN_NOISE and noisy.main == "105 ms"
    real = prefill_cell(speed(0.100), speed(0.130))
    assert real.verdict == "worse" and real.change == "+30.0%" and "\u2192" in real.main
    faster = decode_cell(speed(0.1, decode=40.0), speed(0.1, decode=60.0))
    assert faster.verdict == "better"
    assert decode_cell(speed(0.1, decode=40.0), speed(0.1, decode=41.0)).verdict == "same"


def test_latency_plot_draws_noise_at_the_last_real_position() -> None:
    points = [Point("baseline", speed(0.100)), Point("finetune", speed(0.105)),
              Point("evaluate", speed(0.108)), Point("quantize", speed(0.060)),
              Point("prune", speed(0.050))]
    drawn = _steady(points, _prefill_ms)
    # finetune and evaluate wobble within 10% of the baseline: drawn where it is; quantize
    # moved; prune is 17% faster than quantize: moved again
    assert drawn == [100.0, 100.0, 100.0, 60.0, 50.0]
    drift = [Point(str(i), speed(0.100 * 1.06 ** i)) for i in range(3)]
    assert _steady(drift, _prefill_ms)[1] == 100.0  # +6%: noise
    assert _steady(drift, _prefill_ms)[2] > 110.0  # +12.4% from the last drawn: a change

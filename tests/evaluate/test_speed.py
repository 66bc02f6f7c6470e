"""Speed measurement: both engines run and report consistent records (no timing thresholds)."""

from __future__ import annotations

import statistics

import pytest

from mfmaccel.evaluate.speed import measure_speed
from mfmaccel.pipeline.measure import SPEED_REPEATS, measure
from mfmaccel.pipeline.recipe import EvalSpec


def test_both_engines_report(tiny_llama) -> None:
    for engine in ("mfmaccel", "hf-generate"):
        result = measure_speed(tiny_llama, new_tokens=8, repeats=1, engine=engine)
        assert result.engine == engine and result.new_tokens == 8
        assert result.prefill_seconds > 0 and result.decode_tokens_per_s > 0
        assert result.weight_bytes == tiny_llama.weight_bytes
        assert result.peak_rss_bytes > 50 << 20
        assert set(result.to_dict()) >= {"prefill_seconds", "decode_tokens_per_s"}


def test_every_repeat_is_kept_and_the_median_reported(tiny_llama) -> None:
    result = measure_speed(tiny_llama, new_tokens=6, repeats=3)
    assert len(result.decode_tokens_per_s_runs) == len(result.prefill_seconds_runs) == 3
    assert result.decode_tokens_per_s == statistics.median(result.decode_tokens_per_s_runs)
    assert result.prefill_seconds == statistics.median(result.prefill_seconds_runs)
    with pytest.raises(ValueError, match="repeats"):
        measure_speed(tiny_llama, new_tokens=6, repeats=0)


def test_the_pipeline_measures_speed_over_repeats(tiny_llama) -> None:
    """The run's speed figure is a median of several runs, each kept for the report's noise."""
    metrics = measure(tiny_llama, [], EvalSpec(speed=True, speed_tokens=4))
    speed = metrics.details["speed"]
    assert speed["repeats"] == SPEED_REPEATS >= 3
    assert len(speed["decode_tokens_per_s_runs"]) == SPEED_REPEATS
    assert metrics.decode_tokens_per_s == statistics.median(speed["decode_tokens_per_s_runs"])

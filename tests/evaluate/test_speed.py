"""Speed measurement: both engines run and report consistent records (no timing thresholds)."""

from __future__ import annotations

from mfmaccel.evaluate.speed import measure_speed


def test_both_engines_report(tiny_llama) -> None:
    for engine in ("mfmaccel", "hf-generate"):
        result = measure_speed(tiny_llama, new_tokens=8, repeats=1, engine=engine)
        assert result.engine == engine and result.new_tokens == 8
        assert result.prefill_seconds > 0 and result.decode_tokens_per_s > 0
        assert result.weight_bytes == tiny_llama.weight_bytes
        assert result.peak_rss_bytes > 50 << 20
        assert set(result.to_dict()) >= {"prefill_seconds", "decode_tokens_per_s"}

"""Generation speed at batch 1: prefill latency, greedy decode tokens/s, peak memory.

Both engines are timed the same way, inside one run: prefill = prompt in -> first new token out;
decode rate = (N - 1) tokens / time from the first to the last new token (end-of-sequence
ignored). For Hugging Face `generate` the token times come from its streamer hook. Medians over
`repeats` after one untimed warm-up run of the same length (first calls pay for the allocator,
lazy initialisation and OpenMP threads waking), and every repeat is kept, so a reader can see
the spread: one short run on a busy machine can be off by 10x or more.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.models.record import CAUSAL_LM, VLM, LoadedModel
from mfmaccel.records import Record
from mfmaccel.runtime.engine import greedy_generate

ENGINES = ("mfmaccel", "hf-generate")
DEFAULT_PROMPT = (
    "def quicksort(items):\n    \"\"\"Sort a list of numbers in ascending order.\"\"\"\n"
)


@dataclass
class SpeedResult(Record):
    model: str
    engine: str
    prompt_tokens: int
    new_tokens: int
    prefill_seconds: float
    decode_tokens_per_s: float
    peak_rss_bytes: int  # of the whole process so far (ru_maxrss)
    weight_bytes: int
    threads: int
    repeats: int
    prefill_seconds_runs: list[float]  # every timed repeat, in order
    decode_tokens_per_s_runs: list[float]


class _TokenClock:
    """A `generate` streamer that only notes when each batch of tokens arrives."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def _timed_run(model: LoadedModel, engine: str, ids: torch.Tensor, n: int) -> tuple[float, float]:
    """(prefill seconds, decode tokens/s) for one greedy run of exactly `n` new tokens."""
    if engine == "mfmaccel":
        out = greedy_generate(model.module, ids, n)
        return out.prefill_seconds, out.decode_tokens_per_s
    clock = _TokenClock()
    start = time.perf_counter()
    with torch.inference_mode():
        model.module.generate(
            ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, streamer=clock,
            pad_token_id=model.tokenizer.pad_token_id or 0,
        )
    first, last = clock.times[1], clock.times[-1]  # times[0]: the prompt is echoed at start
    return first - start, (n - 1) / (last - first) if last > first else 0.0


def measure_speed(
    model: LoadedModel,
    prompt: str = DEFAULT_PROMPT,
    *,
    new_tokens: int = 64,
    repeats: int = 3,
    engine: str = "mfmaccel",
) -> SpeedResult:
    """Time `engine` on `model` for one prompt: the median of `repeats` timed runs."""
    if model.kind not in (CAUSAL_LM, VLM):
        raise UserInputError(f"speed needs a text generator; '{model.name}' is {model.kind}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}")
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    ids = model.tokenizer(prompt, return_tensors="pt").input_ids
    return timed_speed(model, engine, lambda: _timed_run(model, engine, ids, new_tokens),
                       prompt_tokens=ids.shape[1], new_tokens=new_tokens, repeats=repeats)


def timed_speed(model: LoadedModel, engine: str, run: Callable[[], tuple[float, float]], *,
                prompt_tokens: int, new_tokens: int, repeats: int) -> SpeedResult:
    """The `SpeedResult` of `run()` (one generation: prefill seconds, decode tokens/s) timed
    `repeats` times after an untimed warm-up; any engine (a draft, in `decode.speed`) is timed
    this one way."""
    run()  # warm-up, untimed
    prefills, rates = zip(*(run() for _ in range(repeats)), strict=True)
    return SpeedResult(
        model=model.name, engine=engine, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
        prefill_seconds=statistics.median(prefills),
        decode_tokens_per_s=statistics.median(rates),
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        weight_bytes=model.weight_bytes, threads=torch.get_num_threads(), repeats=repeats,
        prefill_seconds_runs=list(prefills), decode_tokens_per_s_runs=list(rates),
    )

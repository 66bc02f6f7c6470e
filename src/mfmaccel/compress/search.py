"""From a budget to a quantized model: calibrate, measure sensitivity, search, verify.

One entry point, `compress_to_budget`, serves `mfmaccel quantize` and the `quantize` stage.
A budget is whole-model bytes (packed integers, scales, zero points and every fp16
parameter; the FP16 model is 100%), an average bit-width over all parameters, or a maximum
perplexity increase, which is met by measuring real perplexity along the predicted front.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mfmaccel.compress.calibration import calibration_batches, gptq_calibration_batches
from mfmaccel.compress.mixed import Assignment, MixedSearch
from mfmaccel.compress.probe_jobs import ProbeSource
from mfmaccel.compress.quantize import quantize_model, storage_bytes, uniform_plan
from mfmaccel.compress.sensitivity import measure_sensitivity
from mfmaccel.errors import UserInputError
from mfmaccel.models.record import LoadedModel
from mfmaccel.models.source import ModelSource
from mfmaccel.parallel import IN_PROCESS, Executor
from mfmaccel.records import Record
from mfmaccel.runtime.grid import QuantSpec
from mfmaccel.runtime.parts import quantizable_parts
from mfmaccel.runtime.plan import QuantPlan

DEFAULT_SPECS = ("int3-g128", "int4-g128", "int6-g128")
Log = Callable[[str], None]
Progress = Callable[[int, int], None]
def parse_spec(label: str) -> QuantSpec:
    """"int4-g128" / "int8-c-sym" -> QuantSpec (c: per output channel; asym unless -sym)."""
    parts = label.lower().split("-")
    try:
        if not parts[0].startswith("int"):
            raise ValueError
        bits = int(parts[0][3:])
        group = None if len(parts) < 2 or parts[1] == "c" else int(parts[1].removeprefix("g"))
        symmetric = len(parts) > 2 and parts[2] == "sym"
    except ValueError:
        raise UserInputError(
            f"cannot read bit-width spec '{label}'; write e.g. int4-g128, int3-g64, int8-c-sym"
        ) from None
    return QuantSpec(bits, group, symmetric)


@dataclass
class Budget:
    """Exactly one of the three ways to say how small."""

    bytes: int | None = None
    avg_bits: float | None = None
    max_ppl_increase: float | None = None

    def __post_init__(self) -> None:
        given = [x for x in (self.bytes, self.avg_bits, self.max_ppl_increase) if x is not None]
        if len(given) != 1:
            raise UserInputError("give exactly one budget: --budget-bytes, --avg-bits or "
                                 "--max-ppl-increase")
        if any(x <= 0 for x in given):
            raise UserInputError("the budget must be positive")


def check_quantizable(name: str, kind: str, budget: Budget | None = None) -> None:
    """Refuse what quantization cannot take: callers pass the kind before loading weights
    (`models.loader.model_kind`) to fail fast, and `compress_to_budget` checks again."""
    from mfmaccel.models.record import CAUSAL_LM, ENCODER, VLM

    if kind not in (CAUSAL_LM, VLM, ENCODER):
        raise UserInputError(f"{name} is a {kind} model; quantize takes a causal LM, a LLaVA "
                             "VLM or a BERT-style text encoder")
    if kind == ENCODER and budget is not None and budget.max_ppl_increase is not None:
        raise UserInputError(f"{name} is an encoder and has no perplexity; give --budget-bytes "
                             "or --avg-bits")


@dataclass
class CompressionRecord(Record):
    model: str
    budget: dict
    method: str
    fp16_bytes: int
    bytes: int
    fraction_of_fp16: float
    choice_histogram: dict[str, int]
    sensitivity: dict = field(default_factory=dict)
    front: list[dict] = field(default_factory=list)  # predicted (bytes, kl) per budget
    uniform: list[dict] = field(default_factory=list)  # every part at one spec: measured kl
    chosen: dict = field(default_factory=dict)  # the point applied: bytes, predicted kl
    verified: list[dict] = field(default_factory=list)  # real perplexity of tried points
    seconds: dict[str, float] = field(default_factory=dict)


def bit_histogram(choice: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for label in choice.values():
        counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items()))


def compress_to_budget(
    model: LoadedModel, budget: Budget, specs: Sequence[str] = DEFAULT_SPECS,
    *, method: str = "gptq", calib_tokens: int = 2048, eval_tokens: int = 8192,
    reload: Callable[[], LoadedModel] | None = None, log: Log = print,
    progress: Progress | None = None, apply_progress: Progress | None = None,
    executor: Executor = IN_PROCESS, source: ModelSource | None = None,
) -> tuple[LoadedModel, CompressionRecord]:
    """Quantize `model` in place to the budget with the tiered mixed-precision search.

    With a quality budget, candidate points are tried on fresh copies from `reload()`; the
    one chosen is then applied to `model` itself. `progress` follows the sensitivity
    measurement, `apply_progress` the quantization of the point chosen. The sensitivity's
    probes run on `executor`, whose workers load `source` (`model` as loaded, by name; None:
    `model` is held only here)."""
    check_quantizable(model.name, model.kind, budget)
    start = time.perf_counter()
    grid = [parse_spec(s) for s in specs]
    batches = calibration_batches(model.tokenizer, calib_tokens, positions=model.context_length)
    fp16 = 2 * model.params
    parts = {n: p for n, (p, _) in quantizable_parts(model.module).items()}
    other = fp16 - 2 * sum(p.params for p in parts.values())
    log(f"sensitivity: {len(parts)} parts x {len(grid)} bit-widths on {calib_tokens} tokens")
    sensitivity = measure_sensitivity(
        model.module, batches, grid, progress=progress, executor=executor,
        source=None if source is None else ProbeSource(source))
    search = MixedSearch(parts, sensitivity)
    seconds = {"sensitivity": sensitivity.seconds["total"]}
    minimum = search.minimum_bytes() + other
    front = [search.by_module(f * fp16 - other) for f in _fractions(minimum / fp16)]
    verified: list[dict] = []
    if budget.max_ppl_increase is None:
        target = budget.bytes if budget.bytes is not None else budget.avg_bits / 8 * model.params
        if target < minimum:
            raise UserInputError(
                f"budget {int(target):,} bytes is below the smallest model these bit-widths "
                f"build: {minimum:,} bytes ({minimum / fp16:.1%} of FP16); raise it"
            )
        point = search.by_module(target - other)
    else:
        point, verified = _meet_quality(
            model, search, front, max_increase=budget.max_ppl_increase, method=method,
            batches=batches, eval_tokens=eval_tokens, reload=reload, log=log)
    plan = QuantPlan(point.choice, sensitivity.specs, method)
    quantize_model(model, plan, batches, apply_progress)
    size = storage_bytes(model.module)
    seconds["total"] = time.perf_counter() - start
    record = CompressionRecord(
        model=model.name, budget=vars(budget), method=method, fp16_bytes=fp16, bytes=size,
        fraction_of_fp16=size / fp16, choice_histogram=bit_histogram(point.choice),
        sensitivity=sensitivity.to_dict(),
        front=[{"bytes": p.weight_bytes + other, "predicted_kl": p.predicted_kl} for p in front],
        uniform=[{"spec": label, "bytes": u.weight_bytes + other, "kl": u.predicted_kl}
                 for label in sensitivity.specs for u in [search.uniform(label)]],
        chosen={"bytes": size, "predicted_kl": point.predicted_kl},
        verified=verified, seconds=seconds,
    )
    return model, record


def _fractions(smallest: float) -> list[float]:
    """Budgets along the front, from just above the smallest model to 60% of FP16."""
    return [f for f in (smallest * 1.001, 0.24, 0.28, 0.32, 0.36, 0.40, 0.45, 0.5, 0.6)
            if f >= smallest]


def _meet_quality(model, search: MixedSearch, front: list[Assignment], *, max_increase: float,
                  method: str, batches, eval_tokens: int, reload, log: Log):
    """Smallest front point whose real perplexity is within `max_increase` of full precision
    (binary search over the front, each probe quantized and measured)."""
    from mfmaccel.data.text import load_text_corpus
    from mfmaccel.evaluate.ppl import perplexity

    if reload is None:
        snapshot = copy.deepcopy(model)

        def reload() -> LoadedModel:
            return copy.deepcopy(snapshot)

    text = load_text_corpus("test")
    reference = perplexity(model, text, max_tokens=eval_tokens).perplexity
    limit = reference * (1 + max_increase)
    verified = []
    low, high, best = 0, len(front) - 1, None
    while low <= high:
        middle = (low + high) // 2
        trial = reload()
        quantize_model(trial, QuantPlan(front[middle].choice, search.sensitivity.specs, method),
                       batches)
        ppl = perplexity(trial, text, max_tokens=eval_tokens).perplexity
        size = storage_bytes(trial.module)
        verified.append({"bytes": size, "ppl": ppl, "reference_ppl": reference})
        log(f"  front point {middle}: {size:,} bytes, perplexity {ppl:.3f} (limit {limit:.3f})")
        if ppl <= limit:
            best, high = middle, middle - 1
        else:
            low = middle + 1
    if best is None:
        raise UserInputError(
            f"no point up to {front[-1].weight_bytes:,} bytes keeps perplexity within "
            f"+{max_increase:.0%}; allow a larger increase or add wider bit-widths"
        )
    return front[best], verified


def uniform_to_spec(model: LoadedModel, spec: str, *, method: str = "rtn",
                    calib_tokens: int = 2048, activations: str | None = None,
                    smoothing: float | None = None, progress: Progress | None = None
                    ) -> LoadedModel:
    """The uniform baseline: every part at one spec (with int8 activations: W8A8; with
    `smoothing`, SmoothQuant's alpha, outlier channels moved into the weights first);
    `progress` follows the layers as they are quantized."""
    check_quantizable(model.name, model.kind)
    if activations == "tensor" or smoothing is not None:  # ranges are read running token ids
        batches = calibration_batches(model.tokenizer, calib_tokens,
                                      positions=model.context_length)
    else:
        batches = gptq_calibration_batches(model, calib_tokens) if method == "gptq" else []
    plan = uniform_plan(model.module, parse_spec(spec), method, activations=activations,
                        smoothing=smoothing)
    return quantize_model(model, plan, batches, progress)

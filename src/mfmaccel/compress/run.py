"""Compress a model named by spec into a new folder: quantize it (to a budget, or every part
to one spec) or prune it, save the smaller model, and its record beside it
(compression.json, pruning.json). A folder that is not an earlier output is refused before
any compute, and a bad combination of settings before the model loads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from mfmaccel.compress.prune import PruneReport
from mfmaccel.compress.recover import prune_and_recover
from mfmaccel.compress.search import (
    DEFAULT_SPECS,
    Budget,
    CompressionRecord,
    check_quantizable,
    compress_to_budget,
    uniform_to_spec,
)
from mfmaccel.errors import UserInputError
from mfmaccel.fileio import atomic_write_json, check_replaceable
from mfmaccel.models import load_model
from mfmaccel.models.loader import model_kind, save_model
from mfmaccel.models.source import ModelSource
from mfmaccel.parallel import IN_PROCESS, Executor
from mfmaccel.progress import Steps, step
from mfmaccel.runtime.plan import describe_method

Log = Callable[[str], None]
# A labelled step's `progress(done, total)`, made when the step starts (None: not shown).


def quantize_to_folder(
    model_spec: str, out: Path, *, budget_bytes: int | None = None,
    avg_bits: float | None = None, max_ppl_increase: float | None = None,
    uniform: str | None = None, specs: Sequence[str] = DEFAULT_SPECS, method: str = "gptq",
    calib_tokens: int = 2048, activations: str | None = None, smoothing: float | None = None,
    executor: Executor = IN_PROCESS, log: Log = print, progress: Steps | None = None,
) -> CompressionRecord | None:
    """Quantize `model_spec` to one budget (searching bit-widths among `specs`) or, with
    `uniform`, every part to that spec (W8A8 with `activations`, SmoothQuant's alpha with
    `smoothing`); save it packed to `out`. Returns the search's record (None for `uniform`).
    The search's sensitivity probes run on `executor` (each worker loads `model_spec`)."""
    check_replaceable(out)  # refuse a user's folder before minutes of compute, not after
    targets = [budget_bytes, avg_bits, max_ppl_increase]
    if uniform is not None and any(t is not None for t in targets):
        raise UserInputError("--uniform takes no budget; give one or the other")
    if uniform is not None and not executor.in_process:
        raise UserInputError("--workers and --scheduler run the budget search's sensitivity "
                             "probes; --uniform measures none (drop them)")
    if (activations is not None or smoothing is not None) and uniform is None:
        raise UserInputError("--activations and --smooth need --uniform (e.g. int8-c-sym)")
    budget = None if uniform is not None else Budget(bytes=budget_bytes, avg_bits=avg_bits,
                                                     max_ppl_increase=max_ppl_increase)
    check_quantizable(model_spec, model_kind(model_spec), budget)
    model = load_model(model_spec)
    plan = (f"every part to {uniform}" if uniform is not None else
            "after measuring the sensitivity and searching the bit-widths,")
    log(f"quantizing {plan} with {describe_method(method)}")
    record = None
    if uniform is not None:
        uniform_to_spec(model, uniform, method=method, calib_tokens=calib_tokens,
                        activations=activations, smoothing=smoothing,
                        progress=step(progress, f"{method} {uniform}"))
    else:
        model, record = compress_to_budget(
            model, budget, specs, method=method, calib_tokens=calib_tokens,
            reload=lambda: load_model(model_spec), progress=step(progress, "sensitivity"),
            apply_progress=step(progress, method), log=log, executor=executor,
            source=ModelSource(model_spec))
    save_model(model, out)
    if record is not None:
        atomic_write_json(out / "compression.json", record.to_dict())
    return record


def prune_to_folder(
    model_spec: str, out: Path, *, blocks: int = 0, mlp_fraction: float = 0.0,
    kv_groups: int = 0, calib_tokens: int = 2048, recover_steps: int = 0,
    recover_tokens: int = 32768, progress: Steps | None = None,
) -> PruneReport:
    """Prune `model_spec` (`prune_and_recover`: blocks, MLP channels, key/value groups, then
    `recover_steps` of distillation if any); save it to `out` as a plain HF model."""
    check_replaceable(out)
    model = load_model(model_spec)
    recovery = step(progress, "recovery") if recover_steps else None
    model, report = prune_and_recover(
        model, calib_tokens=calib_tokens, blocks=blocks, mlp_fraction=mlp_fraction,
        kv_groups=kv_groups, recover_steps=recover_steps, recover_tokens=recover_tokens,
        progress=recovery, prune_progress=step(progress, "pruning"))
    save_model(model, out)
    atomic_write_json(out / "pruning.json", report.to_dict())
    return report

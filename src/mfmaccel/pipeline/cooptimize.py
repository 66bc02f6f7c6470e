"""A whole co-optimisation from names (what `mfmaccel cooptimize` and the pipeline's
`cooptimize` stage call): the knobs searched on the val split of a closed-question benchmark,
each setting also priced on an accelerator preset (`hw.simulate` of the changed model's traced
prefill, so merged and dropped tokens are what it prices), the chosen point then held out on
the test split against the unchanged model. Here because it ties the execute layer's search to
the hw layer's pricing, which sits above it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mfmaccel.evaluate.paired import PairedComparison, compare_paired
from mfmaccel.evaluate.run import vqa_samples
from mfmaccel.execute.cooptimize import Cooptimization, Price, cooptimize
from mfmaccel.execute.settings import Knobs, apply_knobs
from mfmaccel.fileio import atomic_write_json, check_replaceable_file
from mfmaccel.hw.arch import get_arch
from mfmaccel.hw.simulate import simulate
from mfmaccel.hw.workload import workload_for_model
from mfmaccel.models import LoadedModel, load_model

QUESTION_TOKENS = 16  # text tokens the accelerator prices after the image: a short question


def accelerator_price(arch_name: str, *, seq_len: int = QUESTION_TOKENS) -> Price:
    """Latency and energy of a model's prefill (one image, `seq_len` text tokens) on a preset."""
    arch = get_arch(arch_name)

    def price(model: LoadedModel) -> dict[str, float]:
        result = simulate(workload_for_model(model, seq_len), arch)
        return {"latency_ms": result.latency_ms, "energy_mj": result.energy_mj}

    return price


def cooptimize_loaded(model: LoadedModel, *, task: str, trials: int, limit: int | None,
                      max_drop: float, arch: str | None, prefer: str, seed: int,
                      test_limit: int | None,
                      progress: Callable[[int, int], None] | None = None
                      ) -> tuple[Cooptimization, PairedComparison]:
    """Search on `task`'s val split (first `limit` questions), then hold the chosen knobs out
    against the unchanged model on its test split (first `test_limit`; None: all of it),
    paired question by question."""
    from mfmaccel.evaluate.vqa import vqa_hits

    price = accelerator_price(arch) if arch else None
    search = vqa_samples(None, "val", limit=limit, benchmark=task)
    result = cooptimize(model, search, trials=trials, max_drop=max_drop, price=price,
                        prefer=prefer, seed=seed, progress=progress)
    test = vqa_samples(None, "test", limit=test_limit, benchmark=task)
    chosen = apply_knobs(model, Knobs(**result.chosen))
    return result, compare_paired(vqa_hits(model, test), vqa_hits(chosen, test))


def cooptimize_model(spec: str, *, out: Path, task: str = "medvqa2", trials: int = 24,
                     limit: int | None = 100, max_drop: float = 0.01,
                     arch: str | None = "edge", prefer: str = "cpu", seed: int = 0,
                     progress: Callable[[int, int], None] | None = None) -> dict:
    """`cooptimize_loaded` on the model named `spec`; the record (search, held-out test,
    task, accelerator) is written to `out`, which must be new or an earlier record."""
    check_replaceable_file(out)
    if arch:
        get_arch(arch)  # an unknown preset is refused before the model loads
    result, held = cooptimize_loaded(load_model(spec), task=task, trials=trials, limit=limit,
                                     max_drop=max_drop, arch=arch, prefer=prefer, seed=seed,
                                     test_limit=limit, progress=progress)
    record = {**result.to_dict(), "task": task, "search_split": "val", "arch": arch,
              "held_out": held.to_dict()}
    atomic_write_json(out, record)
    return record

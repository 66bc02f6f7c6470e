"""Co-optimising the execution knobs of a vision-language model (`Knobs`: resolution, patch
stride, token merging, image-token dropping) against closed-question VQA accuracy, the prefill
measured on this CPU, the prefill's FLOPs, and, when a `price` is given, the accelerator
model's latency and energy. A multi-objective search (optuna's NSGA-II) under a constraint:
accuracy may drop by at most `max_drop` below the unchanged model's on the same questions.

The unchanged model is the search's first trial; the chosen point is the feasible one with the
lowest CPU prefill (or accelerator latency, or FLOPs where CPU timings are noise: `prefer`).
The accelerator side lives above this layer (`hw`), so it comes in as a function of the
model."""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from mfmaccel.errors import UserInputError
from mfmaccel.execute.settings import Knobs, apply_knobs
from mfmaccel.models.record import VLM, LoadedModel
from mfmaccel.records import Record

# model -> {"latency_ms": ..., "energy_mj": ...} on the accelerator (e.g. hw.simulate)
Price = Callable[[LoadedModel], dict[str, float]]
PREFER = ("cpu", "accelerator", "flops")  # what the chosen point is the lowest of


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """What the search may pick: (image size, patch) pairs, ToMe's r up to `max_merge`, the
    FastV layer among `drop_layers` and its keep share among `keeps` (1.0: no dropping)."""

    grids: tuple[tuple[int, int], ...]
    max_merge: int = 4
    drop_layers: tuple[int, ...] = (1, 2, 3, 5, 8)
    keeps: tuple[float, ...] = (1.0, 0.75, 0.5, 0.375, 0.25, 0.125)


@dataclasses.dataclass
class Trial(Record):
    knobs: dict
    accuracy: float
    prefill_ms: float  # median CPU prefill (processor + tower + LM prompt forward)
    gflops: float  # one prefill's FLOPs, counted by torch (tower and LM)
    image_tokens: int
    accelerator: dict[str, float] = dataclasses.field(default_factory=dict)
    feasible: bool = True  # within max_drop of the unchanged model's accuracy


@dataclasses.dataclass
class Cooptimization(Record):
    model: str
    questions: int
    max_drop: float
    prefer: str
    baseline: Trial
    trials: list[Trial]
    front: list[int]  # indices into `trials`: the feasible Pareto front
    chosen: dict  # the chosen knobs (`Knobs` fields)
    chosen_trial: int
    objectives: list[str]
    seconds: float = 0.0


def native_grid(model: LoadedModel) -> tuple[int, int]:
    """(image size, patch) the model's tower reads now."""
    from mfmaccel.execute.tower import tower_geometry

    geometry = tower_geometry(model)
    return geometry.image_size, geometry.patch_size


def default_space(model: LoadedModel) -> SearchSpace:
    """Sizes from half to one and a half times the tower's own, in steps of its patch; FlexiViT
    patches 8/7 and 2 times the trained one where they divide the size."""
    from mfmaccel.runtime.anatomy import decoder_layers

    side, patch = native_grid(model)
    blocks = len(decoder_layers(model.module))
    grids = []
    for stride in sorted({patch, patch * 8 // 7, patch * 2}):
        for size in range(stride, side * 3 // 2 + 1, stride):
            if size >= side // 2 and (size, stride) not in grids:
                grids.append((size, stride))
    layers = tuple(k for k in SearchSpace.drop_layers if k < blocks) or (0,)
    return SearchSpace(grids=tuple(grids), drop_layers=layers)


def seed_points(space: SearchSpace, native: tuple[int, int], *, grids: int = 4) -> list[dict]:
    """The first trials, before the evolution takes over: each knob alone (ToMe at every r,
    FastV at half and a quarter after its second layer choice, the `grids` smaller image grids
    spread over the token counts), so the front starts where each single knob stands and the
    search spends its trials on combining them."""
    index = {grid: i for i, grid in enumerate(space.grids)}
    home = index.get(native, 0)
    layer = space.drop_layers[min(1, len(space.drop_layers) - 1)]
    alone = {"grid": home, "merge_r": 0, "drop_layer": layer, "keep": 1.0}
    points = [{**alone, "merge_r": r} for r in range(1, space.max_merge + 1)]
    points += [{**alone, "keep": keep} for keep in (0.5, 0.25) if keep in space.keeps]
    tokens = native[0] // native[1]
    smaller = sorted((g for g in space.grids if g[0] // g[1] < tokens),
                     key=lambda g: -(g[0] // g[1]))
    step = max(1, len(smaller) // grids)
    points += [{**alone, "grid": index[g]} for g in smaller[::step][:grids]]
    return points


def knobs_for(grid: tuple[int, int], *, native: tuple[int, int], merge_r: int,
              drop_layer: int, keep: float) -> Knobs:
    size, patch = grid
    return Knobs(image_size=None if size == native[0] else size,
                 patch=None if patch == native[1] else patch, merge_r=merge_r,
                 drop_layer=drop_layer if keep < 1.0 else None, drop_keep=keep)


@torch.inference_mode()
def prefill_gflops(model: LoadedModel, inputs: dict) -> float:
    """GFLOPs of one prefill on `inputs` (the last token's logits), by torch's counter; it does
    not see oneDNN's packed products, so count an unfused model (fusion is the same math)."""
    with FlopCounterMode(display=False) as counter:
        model.module(**inputs, logits_to_keep=1)
    return counter.get_total_flops() / 1e9


def measure(model: LoadedModel, samples: Sequence, *, timing: int, repeats: int,
            price: Price | None) -> Trial:
    """Accuracy on `samples`; prefill medians over the first `timing` prompts x `repeats`."""
    from mfmaccel.evaluate.vqa import prompt_inputs, vqa_accuracy

    accuracy = vqa_accuracy(model, samples).accuracy
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            for sample in samples[:timing]:
                start = time.perf_counter()
                model.module(**prompt_inputs(model, sample), logits_to_keep=1)
                times.append(time.perf_counter() - start)
        inputs = prompt_inputs(model, samples[0])
    image_id = model.module.config.image_token_id
    return Trial(knobs={}, accuracy=accuracy, prefill_ms=statistics.median(times) * 1e3,
                 gflops=prefill_gflops(model, inputs),
                 image_tokens=int((inputs["input_ids"] == image_id).sum()),
                 accelerator=price(model) if price else {})


def pareto_front(trials: Sequence[Trial], objectives: Sequence[str]) -> list[int]:
    """Indices of the feasible trials no other feasible trial beats on every objective
    (accuracy higher, the rest lower) and strictly on one."""
    def values(trial: Trial) -> list[float]:
        return [-trial.accuracy if name == "accuracy" else objective_value(trial, name)
                for name in objectives]

    points = [(i, values(t)) for i, t in enumerate(trials) if t.feasible]
    return [i for i, mine in points
            if not any(all(o <= m for o, m in zip(other, mine, strict=True)) and other != mine
                       for _, other in points)]


def objective_value(trial: Trial, name: str) -> float:
    if name == "accuracy":
        return trial.accuracy
    if name in ("prefill_ms", "gflops"):
        return getattr(trial, name)
    return trial.accelerator[name]


def cooptimize(model: LoadedModel, samples: Sequence, *, trials: int = 24,
               max_drop: float = 0.01, space: SearchSpace | None = None,
               price: Price | None = None, prefer: str = "cpu", timing: int = 8,
               repeats: int = 2, seed: int = 0,
               progress: Callable[[int, int], None] | None = None) -> Cooptimization:
    """Search `trials` knob settings (the unchanged model first) on `samples`."""
    import optuna

    check_request(model, samples, trials=trials, max_drop=max_drop, prefer=prefer, price=price)
    space = space or default_space(model)
    native = native_grid(model)
    objectives = ["accuracy", "prefill_ms", "gflops"] + (["latency_ms", "energy_mj"]
                                                         if price else [])
    began = time.perf_counter()
    baseline = measure(model, samples, timing=timing, repeats=repeats, price=price)
    baseline.knobs = dataclasses.asdict(Knobs())
    done: list[Trial] = [baseline]

    def objective(trial: optuna.Trial) -> list[float]:
        grid = space.grids[trial.suggest_int("grid", 0, len(space.grids) - 1)]
        knobs = knobs_for(grid, native=native,
                          merge_r=trial.suggest_int("merge_r", 0, space.max_merge),
                          drop_layer=trial.suggest_categorical("drop_layer", space.drop_layers),
                          keep=trial.suggest_categorical("keep", space.keeps))
        try:
            variant = apply_knobs(model, knobs)
        except UserInputError:  # e.g. more merging than this grid's tokens allow
            raise optuna.TrialPruned() from None
        result = measure(variant, samples, timing=timing, repeats=repeats, price=price)
        result.knobs = dataclasses.asdict(knobs)
        result.feasible = baseline.accuracy - result.accuracy <= max_drop + 1e-9
        trial.set_constraint("accuracy_drop", baseline.accuracy - result.accuracy - max_drop)
        done.append(result)
        if progress:
            progress(len(done) - 1, trials)
        return [objective_value(result, name) for name in objectives]

    optuna.logging.set_verbosity(logging.WARNING)
    sampler = optuna.samplers.NSGAIISampler(seed=seed,
                                            population_size=max(4, min(12, trials // 3)))
    study = optuna.create_study(directions=["maximize"] + ["minimize"] * (len(objectives) - 1),
                                sampler=sampler)
    for point in seed_points(space, native)[: trials // 2]:
        study.enqueue_trial(point)
    study.optimize(objective, n_trials=trials)
    return summarise(model, samples, done, objectives, max_drop=max_drop, prefer=prefer,
                     seconds=time.perf_counter() - began)


def check_request(model: LoadedModel, samples: Sequence, *, trials: int, max_drop: float,
                  prefer: str, price: Price | None) -> None:
    if model.kind != VLM:
        raise UserInputError(f"cooptimize tunes a vision-language model's image knobs; "
                             f"'{model.name}' is a {model.kind} model (try medvlm)")
    if trials < 1:
        raise UserInputError(f"--trials must be at least 1, got {trials}")
    if not 0 <= max_drop < 1:
        raise UserInputError(f"--max-drop is a share of questions in [0, 1), got {max_drop}")
    if prefer not in PREFER:
        raise UserInputError(f"prefer must be one of {', '.join(PREFER)}, got '{prefer}'")
    if prefer == "accelerator" and price is None:
        raise UserInputError("choosing by accelerator latency needs an accelerator to price")
    if not samples:
        raise UserInputError("no questions to co-optimise on; check --task and --limit")


def summarise(model: LoadedModel, samples: Sequence, done: list[Trial],
              objectives: list[str], *, max_drop: float, prefer: str,
              seconds: float) -> Cooptimization:
    """The record: every trial, the feasible front, the chosen knobs; a search in which no
    changed setting kept the accuracy is refused."""
    changed = [i for i, t in enumerate(done) if t.feasible and i > 0]
    if not changed:
        raise UserInputError(f"no setting tried kept accuracy within {max_drop:.3f} of the "
                             f"unchanged model's {done[0].accuracy:.3f}; raise --max-drop "
                             "(e.g. 0.02) or --trials")
    key = {"cpu": "prefill_ms", "accelerator": "latency_ms", "flops": "gflops"}[prefer]
    chosen = min([0, *changed], key=lambda i: objective_value(done[i], key))  # 0: unchanged
    return Cooptimization(model=model.name, questions=len(samples), max_drop=max_drop,
                          prefer=prefer, baseline=done[0], trials=done,
                          front=pareto_front(done, objectives), chosen=done[chosen].knobs,
                          chosen_trial=chosen, objectives=objectives, seconds=seconds)

"""`finetune_medvlm(config)`: build (or load) the model, prepare the data once, then run the
tower warm-up and the three phases, measuring validation accuracy after each.

The LoRA adapter is merged at the end, so the returned model is a plain transformers LLaVA;
the small trained parts (tower, projector, adapter) are kept in `model.meta["trained_parts"]`
for `weights.save_trained_parts`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch

from mfmaccel.data.medvqa import majority_baseline
from mfmaccel.evaluate.vqa import require_vlm, vqa_accuracy
from mfmaccel.finetune.config import FinetuneConfig
from mfmaccel.finetune.data import FinetuneData, prepare_data
from mfmaccel.finetune.features import feature_layer, tower_features
from mfmaccel.finetune.phases import PHASES, run_phase
from mfmaccel.finetune.tower_warmup import probe_accuracy, warm_up_tower
from mfmaccel.models.lora import add_lora, lora_config, lora_state, merge_lora
from mfmaccel.models.medvlm_parts import projector, tower
from mfmaccel.models.record import LoadedModel
from mfmaccel.records import Record

Log = Callable[[str], None]
TRAIN_PROBE = 256  # training images the warm-up's fact heads are read back on
Progress = Callable[[str], Callable[[int, int], None] | None]


@dataclasses.dataclass
class PhaseRecord(Record):
    name: str
    steps: int
    seconds: float  # training time (validation excluded)
    trained: list[str]  # parameter groups that trained
    loss: list[float]
    val: dict[str, Any] = dataclasses.field(default_factory=dict)  # VQAResult after the phase
    val_seconds: float = 0.0
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class FinetuneRecord(Record):
    config: dict[str, Any]
    model: str
    data: dict[str, Any]
    phases: list[PhaseRecord]
    val_before: dict[str, Any] = dataclasses.field(default_factory=dict)
    val_majority: dict[str, float] = dataclasses.field(default_factory=dict)
    data_seconds: float = 0.0
    total_seconds: float = 0.0

    def curves(self) -> dict[str, list[float]]:
        """{"phase1/loss": [...], "phase1/val_acc": [...], ...}; the tower warm-up's loss (on
        its own fact heads, another scale) is "phase1a/tower_fact_loss"."""
        result: dict[str, list[float]] = {}
        for phase in self.phases:
            if phase.name == "warmup":
                result["phase1a/tower_fact_loss"] = phase.loss
                continue
            key = f"phase{PHASES.index(phase.name) + 1}"
            result[f"{key}/loss"] = phase.loss
            if phase.val:
                result[f"{key}/val_acc"] = [phase.val["accuracy"]]
        return result


def _validate(model: LoadedModel, data: FinetuneData, log: Log) -> tuple[dict, float]:
    start = time.perf_counter()
    result = vqa_accuracy(model, data.val, mode="rank").to_dict()
    seconds = time.perf_counter() - start
    log(f"  val accuracy {result['accuracy']:.3f} {result['per_type']} ({seconds:.0f} s)")
    return result, seconds


def finetune_model(
    model: LoadedModel, config: FinetuneConfig, log: Log = print, progress: Progress | None = None,
) -> tuple[LoadedModel, FinetuneRecord]:
    """Run the warm-up and the three phases on `model` (a LLaVA-style VLM), in place."""
    require_vlm(model)
    bar = progress or (lambda label: None)
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    data = prepare_data(config, model.processor)
    data_seconds = time.perf_counter() - start
    log(f"data ready in {data_seconds:.0f} s: {data.description}")
    record = FinetuneRecord(
        config=config.model_dump(), model=model.name, data=data.description, phases=[],
        val_majority=majority_baseline([c.sample for c in data.captions], data.val)
        if config.data is None else {}, data_seconds=data_seconds,
    )
    module = model.module
    cached = config.tower_frozen and feature_layer(module) is not None
    if cached:
        start_features = time.perf_counter()
        cache_features(module, data)
        log(f"tower features of {len(data.pixels)} images cached in "
            f"{time.perf_counter() - start_features:.0f} s")
    if config.val_before:
        record.val_before, _ = _validate(model, data, log)
    if config.warmup.steps:
        log(f"phase 1a (tower warm-up): {config.warmup.steps} steps")
        result, heads = warm_up_tower(module, data.pixels, [c.facts for c in data.captions],
                                      config=config.warmup, seed=config.seed,
                                      max_grad_norm=config.max_grad_norm,
                                      progress=bar("tower warm-up"))
        val_facts = [c.facts for c in data.val_captions]
        probe = probe_accuracy(module, heads, data.val_pixels, val_facts) if val_facts else {}
        seen = train_probe(module, heads, data)
        log(f"  {result.seconds:.0f} s, loss {_ends(result.losses)}, val probe {probe}, "
            f"train probe {seen}")
        record.phases.append(PhaseRecord("warmup", config.warmup.steps, result.seconds,
                                         ["tower"], result.losses,
                                         extra={"val_probe": probe, "train_probe": seen}))
    peft_model = None
    for phase in PHASES:
        if phase != "alignment" and peft_model is None:
            peft_model = add_lora(module, lora_config(config.lora_rank, config.lora_alpha))
        steps = getattr(config, phase).steps
        log(f"phase {PHASES.index(phase) + 1} ({phase}): {steps} steps")
        result, trained = run_phase(module, model.processor, phase, data=getattr(data, phase),
                                    config=config, progress=bar(phase), cached=cached)
        log(f"  {result.seconds:.0f} s, loss {_ends(result.losses)}")
        val, val_seconds = _validate(model, data, log)
        record.phases.append(PhaseRecord(phase, steps, result.seconds, trained, result.losses,
                                         val, val_seconds))
    # a frozen zoo tower is rebuilt from the zoo (sha256-checked) and need not ship
    zoo_tower = config.tower_frozen and "tower" in model.meta.get("vision", {})
    model.meta["trained_parts"] = _trained_parts(module, peft_model, config,
                                                 keep_tower=not zoo_tower)
    model.meta["finetuned"] = True
    if peft_model is not None:
        model.module = merge_lora(peft_model)
    model.module.eval()
    record.total_seconds = time.perf_counter() - start
    return model, record


def cache_features(module: torch.nn.Module, data: FinetuneData) -> None:
    """Every phase's pixels replaced by the frozen tower's features, each tensor computed once
    (phases share the training images' tensor)."""
    done: dict[int, torch.Tensor] = {}
    for phase in PHASES:
        phase_data = getattr(data, phase)
        key = id(phase_data.pixels)
        if key not in done:
            done[key] = tower_features(module, phase_data.pixels)
        phase_data.pixels = done[key]


def train_probe(module: torch.nn.Module, heads, data: FinetuneData) -> dict[str, float]:
    """The fact heads on an even spread of TRAIN_PROBE training images: next to the val
    probe it tells an under-trained tower (both low) from one that does not generalise to
    the held-out sources (train high, val low)."""
    facts = [c.facts for c in data.captions]
    step = max(1, len(facts) // TRAIN_PROBE)
    return probe_accuracy(module, heads, data.pixels[::step], facts[::step])


def _ends(losses: list[float]) -> str:
    return f"{losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "-"


def _trained_parts(module: torch.nn.Module, peft_model, config: FinetuneConfig, *,
                   keep_tower: bool) -> dict:
    """Copies of the trained tensors (adapter unmerged) for `weights/medvlm/`."""
    def copy(part: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in part.state_dict().items()}

    return {
        "vision_tower": copy(tower(module)) if keep_tower else {},
        "projector": copy(projector(module)),
        "lora": lora_state(peft_model) if peft_model is not None else {},
        "lora_config": {"rank": config.lora_rank, "alpha": config.lora_alpha},
    }


def finetune_medvlm(
    config: FinetuneConfig, log: Log = print, progress: Progress | None = None,
) -> tuple[LoadedModel, FinetuneRecord]:
    """Build medvlm (or load `config.base`, a user's HF LLaVA folder) and fine-tune it."""
    from mfmaccel.models import load_model
    from mfmaccel.models.medvlm import build_medvlm

    if config.base:
        model = load_model(config.base, seed=config.seed)
    else:
        model = build_medvlm(config.seed, vision=config.vision())
    return finetune_model(model, config, log, progress)

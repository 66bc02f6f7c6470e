"""`main_finetune(...)`: the reproduction entry point behind `mfmaccel finetune`.

Runs the default (or a YAML) recipe, then measures closed-question accuracy on the test split
next to the majority baseline, and writes the result: for medvlm the small trained parts plus
`manifest.json` (what `load_medvlm(out)` reads); for a user's `--base` LLaVA the whole
fine-tuned model as an HF folder (loadable with `load_model(out)`) plus `finetune.json`.

The default `out` is a new folder under `results/`, never the committed `weights/medvlm/`
(replacing those takes an explicit `--out weights/medvlm`). A user's data folder without a test
split is measured on its training split, and the log line, manifest and table say so.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mfmaccel.data.medvqa import (
    load_medvqa,
    load_medvqa2,
    load_vqa_folder,
    majority_baseline,
    planned_answers,
    planned_answers_v2,
)
from mfmaccel.evaluate.vqa import vqa_accuracy
from mfmaccel.fileio import atomic_write_json, check_replaceable
from mfmaccel.finetune.config import FinetuneConfig, load_config
from mfmaccel.finetune.data import val_per_source
from mfmaccel.finetune.run import FinetuneRecord, Progress, finetune_medvlm
from mfmaccel.models.medvlm_parts import MANIFEST, save_trained_parts
from mfmaccel.models.record import LoadedModel

DEFAULT_OUT = Path("results/finetune/medvlm")
TRAIN_AS_TEST_NOTE = ("no test split in the data folder: these figures are on the training "
                      "split, questions the model was trained on, not a held-out test")


def command_line(*, config: str | Path | None, out: Path, data, base, test_limit) -> str:
    parts = ["mfmaccel", "finetune"]
    for flag, value in (("--config", config), ("--out", out), ("--data", data), ("--base", base),
                        ("--test-limit", test_limit)):
        if value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts)


def test_split(config: FinetuneConfig, limit: int | None):
    """(test samples, majority baseline, split measured) from the user's data or the offline
    benchmark; a user's folder without a test split falls back to its train split."""
    split = "test"
    if config.data is not None:
        samples = load_vqa_folder(config.data)
        train = [s for s in samples if s.split == "train"]
        test = [s for s in samples if s.split == "test"]
        if not test:
            test, split = train, "train"
    elif config.benchmark == "medvqa2":
        train = planned_answers_v2("train", seed=config.seed)
        test = load_medvqa2("test", seed=config.seed, limit=limit)
    else:
        per_source = val_per_source(config)
        # the baseline needs only the train answers, and --test-limit only its first questions
        train = planned_answers("train", seed=config.seed, per_source=config.train_per_source)
        test = load_medvqa("test", seed=config.seed, per_source=per_source, limit=limit)
    test = test[:limit] if limit else test
    return test, majority_baseline(train, test), split


def evaluate_test(model: LoadedModel, config: FinetuneConfig, limit: int | None,
                  log: Callable[[str], None]) -> dict[str, Any]:
    """Accuracy on the test split; `split` names the split measured (`train` when the user's
    data has no test split, with `note` saying the figures are on trained data)."""
    start = time.perf_counter()
    test, majority, split = test_split(config, limit)
    if split != "test":
        log(f"{config.data}: {TRAIN_AS_TEST_NOTE}")
    result = vqa_accuracy(model, test, mode="rank", majority_baseline=majority).to_dict()
    result["seconds"] = time.perf_counter() - start
    result["split"] = split
    if split != "test":
        result["note"] = TRAIN_AS_TEST_NOTE
    log(f"{split} accuracy {result['accuracy']:.3f} on {result['n']}: {result['per_type']}; "
        f"majority baseline {majority}")
    return result


def summary(record: FinetuneRecord) -> dict[str, Any]:
    """Val accuracy after each phase and wall time of each part, for the manifest."""
    seconds = {"data": record.data_seconds}
    val: dict[str, Any] = {}
    if record.val_before:
        val["before"] = record.val_before
    for phase in record.phases:
        seconds[phase.name] = phase.seconds
        if phase.val:
            seconds[f"{phase.name}_validation"] = phase.val_seconds
            val[f"after_{phase.name}"] = {"accuracy": phase.val["accuracy"],
                                          "per_type": phase.val["per_type"], "n": phase.val["n"]}
        if phase.extra.get("val_probe"):
            val["tower_probe_after_warmup"] = phase.extra["val_probe"]
        if phase.extra.get("train_probe"):
            val["tower_probe_on_train_after_warmup"] = phase.extra["train_probe"]
    seconds["total"] = record.total_seconds
    return {"val": val, "val_majority_baseline": record.val_majority, "wall_seconds": seconds}


def environment() -> dict[str, Any]:
    import peft
    import transformers

    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "peft": peft.__version__,
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def main_finetune(
    *,
    config: str | Path | None = None,
    out: str | Path = DEFAULT_OUT,
    data: str | Path | None = None,
    base: str | Path | None = None,
    test_limit: int | None = None,
    log: Callable[[str], None] = print,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fine-tune, measure on the test split, write `out`; returns the manifest written.

    `config`: YAML file of `FinetuneConfig` keys (defaults otherwise); `data`: a VQA-RAD /
    SLAKE-format folder (phase 3 and the test split come from it); `base`: a user's HF LLaVA
    folder instead of medvlm; `test_limit`: evaluate only the first N test questions.
    """
    out = Path(out)
    settings = load_config(config, data=str(data) if data else None,
                           base=str(base) if base else None)
    check_replaceable(out)  # refuse a user's folder now, not after training
    model, record = finetune_medvlm(settings, log=log, progress=progress)
    manifest: dict[str, Any] = {
        "model": "medvlm" if settings.base is None else settings.base,
        "command": command_line(config=config, out=out, data=data, base=base,
                                test_limit=test_limit),
        "seed": settings.seed,
        "config": settings.model_dump(),
        **summary(record),
        "environment": environment(),
        "curves": record.curves(),
    }
    if settings.base is None:
        from mfmaccel.models.medvlm import LANGUAGE_MODEL, load_medvlm

        manifest["language_model"] = LANGUAGE_MODEL
        save_trained_parts(model, out, manifest)
        model = load_medvlm(out)  # measure exactly what users will load (fp16 parts)
        manifest = json.loads((out / MANIFEST).read_text())
        manifest["test"] = evaluate_test(model, settings, test_limit, log)
        manifest["test_split"] = manifest["test"]["split"]
        atomic_write_json(out / MANIFEST, manifest)
    else:
        from mfmaccel.models.loader import save_model

        model.meta.pop("trained_parts", None)
        save_model(model, out)
        manifest["test"] = evaluate_test(model, settings, test_limit, log)
        manifest["test_split"] = manifest["test"]["split"]
        atomic_write_json(out / "finetune.json", manifest)
    task = "medvqa --data " + settings.data if settings.data else settings.benchmark
    log(f"wrote {out}; use it with --model {out} (e.g. mfmaccel eval --model {out} --task {task})"
        if settings.base is None else f"wrote {out}; use it with --model {out}")
    return manifest

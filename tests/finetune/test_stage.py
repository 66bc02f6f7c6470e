"""The pipeline stage runs the phases on the pipeline's model and reports curves/artifacts."""

from __future__ import annotations

import torch

from mfmaccel.finetune.config import PhaseConfig, WarmupConfig
from mfmaccel.models import load_model
from mfmaccel.models.loader import known_model_names, model_kind, save_model
from mfmaccel.models.record import VLM
from mfmaccel.pipeline.stage import RunContext
from mfmaccel.pipeline.stages.finetune import STAGE, FinetuneParams

from .conftest import FAST_PHASE


def _params() -> FinetuneParams:
    return FinetuneParams(
        benchmark="medvqa", train_per_source=2, batch_size=2, val_samples=2,
        warmup=WarmupConfig(steps=1),
        alignment=PhaseConfig(**FAST_PHASE), instruction=PhaseConfig(**FAST_PHASE),
        vqa=PhaseConfig(**FAST_PHASE),
    )


def test_stage_on_tiny_medvlm_reports_curves_and_saves_parts(tiny_medvlm, tmp_path):
    assert VLM in STAGE.accepts and STAGE.name == "finetune"
    ctx = RunContext(stage_dir=tmp_path, seed=0, log=lambda _: None)
    model, report = STAGE.run(tiny_medvlm, _params(), ctx)
    for key in ("phase1/loss", "phase1/val_acc", "phase2/loss", "phase2/val_acc",
                "phase3/loss", "phase3/val_acc"):
        assert report.curves[key], key
    assert report.artifacts == ["finetune.json", "trained_parts"]
    assert (tmp_path / "trained_parts" / "manifest.json").is_file()
    assert "trained_parts" not in model.meta
    # the runner saves the stage's model as an HF folder and resumes from it
    folder = save_model(model, tmp_path / "model")
    reloaded = load_model(str(folder))
    ids = torch.tensor([[1, 2, 3]])
    with torch.inference_mode():
        assert torch.allclose(model.module(input_ids=ids).logits,
                              reloaded.module(input_ids=ids).logits, atol=1e-5)
    assert reloaded.processor.image_token == "<image>"


def test_stage_on_tiny_llava(tmp_path):
    ctx = RunContext(stage_dir=tmp_path, seed=0, log=lambda _: None)
    _, report = STAGE.run(load_model("tiny-llava"), _params(), ctx)
    assert report.artifacts == ["finetune.json"]
    assert "phase1a/tower_fact_loss" in report.curves


def test_medvlm_is_a_known_vlm_name():
    assert "medvlm" in known_model_names()
    assert model_kind("medvlm") == VLM


def test_medical_style_recipe_runs_end_to_end_on_the_tiny_medvlm(tmp_path):
    from mfmaccel.pipeline.recipe import parse_recipe
    from mfmaccel.pipeline.runner import run_recipe
    from mfmaccel.report import write_report

    params = _params().model_dump(exclude_defaults=True)
    recipe = parse_recipe({
        "name": "med", "model": "medvlm-tiny",
        "evaluation": {"tasks": ["medvqa"], "limit": 3, "speed": False},
        "stages": [{"stage": "finetune", "params": params}],
    })
    state = run_recipe(recipe, runs_dir=tmp_path, log=lambda _: None)
    stage = state.stages[-1]
    assert stage.stage == "finetune" and stage.curves["phase3/loss"]
    assert stage.after.quality["medvqa"] is not None
    assert (tmp_path / "med" / "metrics.json").is_file()
    assert write_report(tmp_path / "med").is_file()

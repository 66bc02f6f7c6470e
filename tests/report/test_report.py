"""The run report: a self-contained HTML page and a console table from a run folder."""

from __future__ import annotations

import base64
import re
import struct
from pathlib import Path

import pytest
from rich.console import Console

from mfmaccel.errors import UserInputError
from mfmaccel.pipeline.recipe import parse_recipe
from mfmaccel.pipeline.rundir import RunDirectory, RunState
from mfmaccel.pipeline.runner import run_recipe
from mfmaccel.records import Metrics, StageResult
from mfmaccel.report import console_summary, load_run, write_report
from mfmaccel.report.plots import pareto_mask, quality_vs_latency, stage_curves
from mfmaccel.report.rows import run_points

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL_NOTE = "pruned 30% of MLP channels <script>alert('x')</script>"


def metrics(ppl: float, pass1: float, mb: float, prefill: float | None = 0.085,
            decode: float | None = 42.0) -> Metrics:
    return Metrics(quality={"ppl": ppl, "humaneval": pass1}, weight_bytes=int(mb * 1e6),
                   params=135_000_000, prefill_seconds=prefill, decode_tokens_per_s=decode)


def varied_state() -> RunState:
    """A made-up run whose stages move size, speed and quality in different directions."""
    steps = [
        ("finetune", "finetune", {"epochs": 2, "lr": 2e-5, "data": "code-train"},
         metrics(16.91, 0.152, 269.1), 1834.2, "two phases: LoRA then full"),
        ("quantize", "quantize", {"bits": 4, "group_size": 128, "method": "q4_k_m"},
         metrics(17.63, 0.146, 94.7, prefill=0.061, decode=71.3), 52.8, ""),
        ("prune", "prune", {"sparsity": 0.3, "structured": True},
         metrics(19.84, 0.110, 70.2, prefill=0.055, decode=80.4), 341.0, EVIL_NOTE),
        ("final-check", "evaluate", {}, metrics(19.84, 0.110, 70.2, prefill=0.055,
                                                decode=80.4), 0.0, ""),
    ]
    recipe = {"name": "varied", "model": "smollm2-135m", "seed": 0,
              "evaluation": {"tasks": ["ppl", "humaneval"]},
              "stages": [{"stage": s, "name": n, "params": p} for n, s, p, *_ in steps]}
    state = RunState(recipe=recipe, baseline=metrics(18.42, 0.122, 269.1))
    curves = {"phase1/loss": [2.9 - 0.9 * (1 - 0.8 ** i) for i in range(20)],
              "phase2/loss": [2.0 - 0.4 * (1 - 0.85 ** i) for i in range(15)],
              "val/accuracy": [0.10, 0.12, 0.13, 0.15, 0.152]}
    for name, stage, params, after, seconds, notes in steps:
        state.stages.append(StageResult(
            name=name, stage=stage, params=params, before=state.latest(), after=after,
            seconds=seconds, notes=notes, curves=curves if stage == "finetune" else {}))
    return state


def save_run(root, state: RunState) -> None:
    root.mkdir(parents=True, exist_ok=True)
    RunDirectory(root).save(state)
    (root / "log.txt").write_text("".join(f"2026-01-01 00:00:0{i} stage {s.name} done\n"
                                          for i, s in enumerate(state.stages)))


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def assert_self_contained(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()


@pytest.fixture(scope="module")
def varied_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs") / "varied"
    save_run(root, varied_state())
    return write_report(root)


def test_report_shows_every_stage_and_formatted_numbers(varied_report) -> None:
    page = varied_report.read_text()
    assert varied_report.name == "report.html"
    for name in ("baseline", "finetune", "quantize", "prune", "final-check"):
        assert f">{name}<" in page
    assert "<h1>varied</h1>" in page and "smollm2-135m" in page
    assert "18.42 \u2192 16.91" in page  # perplexity with 2 decimals
    assert "15.2% \u2192 14.6%" in page  # pass@1 as a percentage
    assert "269 MB \u2192 94.7 MB" in page and "\u221264.8%" in page  # size and its change
    assert "61 ms" in page and "71.3 tok/s" in page
    assert "30 min 34 s" in page  # the fine-tuning wall time
    assert "<span>bits=4</span> <span>group_size=128</span>" in page  # what the stage did


def test_report_embeds_valid_pngs_and_loads_nothing(varied_report) -> None:
    page = varied_report.read_text()
    images = embedded_pngs(page)
    assert len(images) == 3  # size, latency, curves
    for png in images:
        assert png.startswith(PNG_MAGIC) and struct.unpack(">I", png[16:20])[0] > 500
    assert_self_contained(page)


def test_report_escapes_stage_text(varied_report) -> None:
    page = varied_report.read_text()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page


def test_report_from_a_real_tiny_run(tmp_path) -> None:
    recipe = parse_recipe({
        "name": "tiny", "model": "tiny-llama",
        "evaluation": {"tasks": ["ppl"], "ppl_tokens": 64, "speed": False},
        "stages": [{"stage": "evaluate", "params": {"note": "first look"}},
                   {"stage": "evaluate", "name": "again"}],
    })
    state = run_recipe(recipe, runs_dir=tmp_path, log=lambda message: None)
    page = write_report(tmp_path / "tiny").read_text()
    for name in ("baseline", "evaluate", "again", "first look", "tiny-llama"):
        assert name in page
    assert f"{state.baseline.quality['ppl']:.2f}" in page
    assert "measuring tiny-llama before any stage" in page  # the log tail
    assert "ppl_tokens: 64" in page  # the recipe
    assert len(embedded_pngs(page)) == 1  # no speed measured, no curves: only quality vs size
    assert_self_contained(page)
    assert load_run(tmp_path / "tiny").completed() == {"evaluate", "again"}


def test_missing_metrics_is_a_one_line_user_error(tmp_path) -> None:
    (tmp_path / "half").mkdir()
    with pytest.raises(UserInputError) as info:
        write_report(tmp_path / "half")
    message = str(info.value)
    assert "half" in message and "mfmaccel run" in message and "\n" not in message
    with pytest.raises(UserInputError, match="not a run folder"):
        write_report(tmp_path / "nowhere")
    assert not (tmp_path / "half" / "report.html").exists()


def test_corrupt_metrics_is_a_user_error(tmp_path) -> None:
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(UserInputError, match="not a metrics.json"):
        write_report(tmp_path)


def without_speed_or_curves(state: RunState) -> RunState:
    for point in run_points(state):
        point.metrics.prefill_seconds = point.metrics.decode_tokens_per_s = None
    for stage in state.stages:
        stage.before.prefill_seconds = stage.before.decode_tokens_per_s = None
        stage.curves = {}
    return state


def test_unfinished_run_says_what_is_left(tmp_path) -> None:
    state = without_speed_or_curves(varied_state())
    state.stages = state.stages[:2]
    save_run(tmp_path, state)
    page = write_report(tmp_path).read_text()
    assert "Not run yet: prune, final-check" in page
    assert "Prefill" not in page and "Decode" not in page  # columns without data are left out
    assert len(embedded_pngs(page)) == 1


def test_console_summary_prints_every_stage() -> None:
    console = Console(record=True, width=200)
    console_summary(varied_state(), console)
    text = console.export_text()
    for name in ("baseline", "finetune", "quantize", "prune", "final-check", "overall"):
        assert name in text
    assert "18.42 \u2192 16.91" in text and "269 MB \u2192 94.7 MB" in text


def test_pareto_front_follows_the_direction_of_better() -> None:
    sizes = [270.0, 95.0, 70.0, 120.0]
    assert pareto_mask(sizes, [18.4, 17.6, 19.8, 18.0], higher_is_better=False) == [
        False, True, True, False]
    assert pareto_mask(sizes, [0.12, 0.15, 0.11, 0.10], higher_is_better=True) == [
        False, True, True, False]


def test_plots_are_skipped_without_their_data() -> None:
    state = without_speed_or_curves(varied_state())
    assert quality_vs_latency(run_points(state), ["ppl", "humaneval"]) is None
    assert stage_curves(state.stages) is None


def test_per_type_breakdown_sits_next_to_the_majority_baseline() -> None:
    from mfmaccel.report.html import render_html
    from mfmaccel.report.rows import per_type_tables

    def vqa(acc: float, presence: float) -> Metrics:
        record = {"accuracy": acc, "per_type": {"presence": presence, "organ": acc},
                  "majority_baseline": {"presence": 0.5, "organ": 0.0, "overall": 0.25}}
        return Metrics(quality={"medvqa": acc}, weight_bytes=1, details={"medvqa": record})

    state = RunState(recipe={"name": "m"}, baseline=vqa(0.2, 0.4))
    state.stages.append(StageResult(name="finetune", stage="finetune", params={},
                                    before=vqa(0.2, 0.4), after=vqa(0.6, 0.9)))
    (table,) = per_type_tables(state)
    assert table.titles == ["question type", "majority answer", "baseline", "finetune"]
    assert table.rows[-1] == ["all", "25.0%", "20.0%", "60.0%"]
    assert ["presence", "50.0%", "40.0%", "90.0%"] in table.rows
    page = render_html(state, Path("runs/m"), recipe_text="", log_tail=[])
    assert "by question type" in page and "90.0%" in page

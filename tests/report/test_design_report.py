"""The design stage's `design.json` in report.html: built from the real loop records, saved
where the stage saves it, rendered by `write_report`."""

from __future__ import annotations

import json

from rich.console import Console

from mfmaccel.hw.llm_design.loop import LoopSettings, TaskResult, summarize
from mfmaccel.hw.llm_design.run import summary_line
from mfmaccel.pipeline.rundir import RunDirectory, RunState
from mfmaccel.records import Metrics, StageResult
from mfmaccel.report import console_summary, load_run, write_report
from mfmaccel.report.design import headline_table, task_table

EVIL_TASK = "Prob<script>alert('x')</script>"


def suite():
    """Three tasks: one passes zero-shot (synthesized), one passes in round 2, one never does
    (its detail is model output, escaped); one more is skipped."""
    settings = LoopSettings(rounds=3, candidates=2, temperature=0.8, greedy_first=True)
    tasks = [
        TaskResult("Prob001_zero", True, True, 1, 1, 120, 1.5, "pass", "", "clean",
                   cells=3, transistors=18, design="module TopModule; endmodule"),
        TaskResult(EVIL_TASK, True, False, 2, 2, 480, 6.25, "pass", "", "warnings",
                   cells=1234, transistors=5678),
        TaskResult("Prob003_never", False, False, None, 3, 900, 12.0, "compile_error",
                   "syntax error near <b>&amp;", "errors"),
    ]
    return summarize(tasks, "qwen2.5-coder-0.5b", settings,
                     skipped={"Prob099_broken": "reference fails its own bench: timeout"},
                     seconds=19.75)


def save_run(root, record, *, design: bool = True) -> None:
    """A run folder as the runner leaves it: metrics.json, and design.json in the stage's
    folder named by the stage's artifacts."""
    recipe = {"name": "designer", "model": "qwen2.5-coder-0.5b", "seed": 0,
              "stages": [{"stage": "design", "name": "design", "params": {}}]}
    state = RunState(recipe=recipe, baseline=Metrics(quality={"ppl": 9.5}, weight_bytes=10**9))
    run = RunDirectory(root)
    artifacts = []
    if design:
        stage_dir = root / "stages" / "00-design"
        stage_dir.mkdir(parents=True)
        record.save(stage_dir / "design.json")
        artifacts = ["stages/00-design/design.json"]
    state.stages.append(StageResult(name="design", stage="design", params={},
                                    before=state.baseline, after=state.baseline, seconds=19.75,
                                    artifacts=artifacts, notes=summary_line(record)))
    run.save(state)


def test_report_shows_the_suite_and_every_task(tmp_path) -> None:
    save_run(tmp_path / "run", suite())
    page = write_report(tmp_path / "run").read_text()
    assert "LLM-aided design (qwen2.5-coder-0.5b)" in page
    assert "pass@1 (zero-shot, greedy)" in page and "pass@2 with feedback (3 rounds)" in page
    assert ">1/3 (33.3%)<" in page and ">2/3 (66.7%)<" in page
    assert ">+33.3<" in page  # the gain in points
    assert ">1,500<" in page and ">19.8<" in page  # tokens and seconds
    assert "Prob099_broken (reference fails its own bench: timeout)" in page
    assert ">3 / 18<" in page and ">1,234 / 5,678<" in page  # yosys cells / transistors
    assert ">compile_error: syntax error near &lt;b&gt;&amp;amp;<" in page
    assert "security-clean" not in page and ">security<" not in page  # no such fields yet


def test_report_escapes_model_text(tmp_path) -> None:
    save_run(tmp_path / "run", suite())
    page = write_report(tmp_path / "run").read_text()
    assert "<script" not in page and "<b>" not in page
    assert "Prob&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page


def test_security_fields_are_shown_when_the_record_has_them() -> None:
    record = suite().to_dict()
    record["secure"] = 1
    record["tasks"][0]["security"] = "clean"
    record["tasks"][1]["security"] = {"status": "findings", "count": 2}
    headline, tasks = headline_table(record), task_table(record)
    assert headline.titles[-1] == "security-clean passes" and headline.rows[0][-1] == "1/2"
    assert tasks.titles[-1] == "security"
    assert [row[-1] for row in tasks.rows] == ["clean", "findings", ""]


def test_figures_read_back_from_the_saved_json(tmp_path) -> None:
    path = suite().save(tmp_path / "design.json")
    table = task_table(json.loads(path.read_text()))
    assert table.rows[0][:5] == ["Prob001_zero", "yes", "yes", "1", "1"]
    assert table.rows[2][1:5] == ["no", "no", "", "3"]


def test_console_shows_the_stage_summary_line(tmp_path) -> None:
    """The console table's notes are the stage's summary_line: nothing more to add there."""
    save_run(tmp_path / "run", suite())
    console = Console(width=200, record=True)
    console_summary(load_run(tmp_path / "run"), console)
    assert "pass@1 1/3 (33.3%)" in console.export_text()


def test_a_run_without_design_json_has_no_design_section(tmp_path) -> None:
    save_run(tmp_path / "run", suite(), design=False)
    page = write_report(tmp_path / "run").read_text()
    assert "LLM-aided design" not in page and "<h1>designer</h1>" in page

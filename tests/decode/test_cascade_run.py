"""`decode.cascade_run`: a cascade of models named by spec, from loading them to the saved
report; settings that do not fit the task refused before any model loads."""

from __future__ import annotations

import json

import pytest

from mfmaccel.decode import cascade_run
from mfmaccel.decode.cascade_run import code_cascade, run_cascade, vqa_cascade
from mfmaccel.errors import UserInputError


def test_code_cascade_generates_answers_when_no_record_is_given(step_recorder) -> None:
    labels, progress = step_recorder
    report = code_cascade(["tiny-llama", "tiny-qwen2"], limit=4, progress=progress)
    assert report.models == ["tiny-llama", "tiny-qwen2"] and report.problems == 4
    assert labels == ["humaneval on tiny-llama", "self-tests of tiny-llama",
                      "humaneval on tiny-qwen2", "self-tests of tiny-qwen2"]


def test_vqa_cascade_calibrates_on_val_and_reports_on_test(step_recorder) -> None:
    labels, progress = step_recorder
    report = vqa_cascade(["tiny-llava", "tiny-llava"], limit=4, progress=progress)
    assert report.problems == 4 and report.calibration_problems == 4
    assert labels == ["val on tiny-llava", "test on tiny-llava"] * 2


def test_run_cascade_saves_the_report(tmp_path) -> None:
    out = tmp_path / "c.json"
    report = run_cascade("medvqa", ["tiny-llava", "tiny-llava"], out=out, limit=4)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report.to_dict()))
    assert report.questions == "medvqa"


def test_vqa_cascade_answers_the_benchmark_it_is_given(monkeypatch, tmp_path) -> None:
    asked, real = [], cascade_run.vqa_answers

    def answers(model, samples, progress=None):
        asked.append([sample.question for sample in samples])
        return real(model, samples)

    monkeypatch.setattr(cascade_run, "vqa_answers", answers)
    report = run_cascade("medvqa2", ["tiny-llava", "tiny-llava"], out=tmp_path / "c.json",
                         limit=4)
    from mfmaccel.data.medvqa import load_medvqa2

    expected = [s.question for s in load_medvqa2("val", seed=0, limit=4)]
    assert asked[0] == expected and report.questions == "medvqa2"


@pytest.mark.parametrize(("task", "models", "settings", "message"), [
    ("humaneval", ["tiny-llama"], {}, "at least two"),
    ("medvqa", ["a", "b"], {"samples": 2}, "--task humaneval"),
    ("medvqa", ["a", "b"], {"test_lines": 1}, "--task humaneval"),
    ("humaneval", ["a", "b"], {"test_lines": -1}, "0 or more"),
    ("humaneval", ["a", "b"], {"evals": ["one.json"]}, "one --eval record per --model"),
])
def test_settings_that_do_not_fit_are_refused_before_loading(tmp_path, monkeypatch, task,
                                                             models, settings, message) -> None:
    monkeypatch.setattr(cascade_run, "load_model", lambda spec: pytest.fail("loaded"))
    out = tmp_path / "c.json"
    with pytest.raises(UserInputError, match=message):
        run_cascade(task, models, out=out, **settings)
    assert not out.exists()

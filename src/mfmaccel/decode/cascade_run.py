"""A cascade of models named by spec, smallest first, from loading them to the calibrated
report (`cascade.calibrated_cascade`):

- code (HumanEval): each model's answers come from its `mfmaccel eval --task humaneval` record
  or are generated here; theta is calibrated on half the problems, reported on the other half;
- closed-question VQA: every model answers the val split (to calibrate theta) and the test
  split (to report on).

Settings that do not fit the task, and an `out` file that is not an earlier record, are
refused before any model loads.
"""

from __future__ import annotations

import json
from pathlib import Path

from mfmaccel.decode.cascade import (
    CascadeReport,
    answers_from_record,
    calibrated_cascade,
    vqa_answers,
)
from mfmaccel.decode.choices import CascadeTask
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.run import TaskOptions, load_task_data, measure_task, vqa_samples
from mfmaccel.fileio import check_replaceable_file
from mfmaccel.models import load_model
from mfmaccel.progress import Steps, step

# A labelled step's `progress(done, total)`, made when the step starts (None: not shown).


def run_cascade(
    task: str, models: list[str], *, out: Path, data: Path | None = None,
    evals: list[Path] | None = None, limit: int | None = None, samples: int = 1,
    temperature: float = 0.0, test_lines: int = 0, progress: Steps | None = None,
) -> CascadeReport:
    """The cascade of `models` on `task` (a `CascadeTask`), saved to `out`. `evals`,
    `samples`, `temperature` and `test_lines` are for HumanEval (`code_cascade`)."""
    if len(models) < 2:
        raise UserInputError("a cascade needs at least two --model options, smallest first")
    check_replaceable_file(out)
    if task != CascadeTask.humaneval:
        if evals or samples != 1 or temperature or test_lines:
            raise UserInputError("--eval, --samples, --temperature and --test-lines are for "
                                 "--task humaneval")
        report = vqa_cascade(models, data=data, limit=limit, benchmark=task, progress=progress)
    else:
        report = code_cascade(models, data=data, evals=evals, limit=limit, samples=samples,
                              temperature=temperature, test_lines=test_lines,
                              progress=progress)
    report.questions = str(data) if data else task
    report.save(out)
    return report


def code_cascade(
    models: list[str], *, data: Path | None = None, evals: list[Path] | None = None,
    limit: int | None = None, samples: int = 1, temperature: float = 0.0,
    test_lines: int = 0, progress: Steps | None = None,
) -> CascadeReport:
    """HumanEval (or the user's problems at `data`): each model's answers from its eval record
    in `evals` (same order as `models`), else generated here (`samples` candidates at
    `temperature`); `test_lines` tests each model but the last writes for its self-test."""
    options = TaskOptions(samples=samples, temperature=temperature)
    if test_lines < 0:
        raise UserInputError(f"--test-lines must be 0 or more, got {test_lines}")
    if evals and len(evals) != len(models):
        raise UserInputError("give one --eval record per --model, in the same order")
    problems = load_task_data("humaneval", data=data, limit=limit, seed=0)
    chain = []
    for index, name in enumerate(models):
        model = load_model(name)
        if evals:
            if not evals[index].is_file():
                raise UserInputError(f"{evals[index]} does not exist; check --eval")
            record = json.loads(evals[index].read_text())
        else:
            record = measure_task(model, problems, options=options,
                                  progress=step(progress, f"humaneval on {name}")).to_dict()
        chain.append(answers_from_record(model, problems.items, record, test_lines=test_lines,
                                         last=index == len(models) - 1,
                                         progress=step(progress, f"self-tests of {name}")))
    return calibrated_cascade(chain)


def vqa_cascade(models: list[str], *, data: Path | None = None, limit: int | None = None,
                benchmark: str = CascadeTask.medvqa2,
                progress: Steps | None = None) -> CascadeReport:
    """Closed-question VQA (the built-in `benchmark`, medvqa or medvqa2, or the user's folder
    at `data`, which needs a val split): theta calibrated on every val question, the report on
    the test split; the first `limit` questions of each."""
    test = vqa_samples(data, "test", limit=limit, benchmark=benchmark)
    try:
        val = vqa_samples(data, "val", limit=limit, benchmark=benchmark)
    except UserInputError as error:
        raise UserInputError(f"{error}; the VQA cascade calibrates theta on the val split, so "
                             "give --data a folder with val questions") from None
    calibration, reported = [], []
    for name in models:
        model = load_model(name)
        calibration.append(vqa_answers(model, val, progress=step(progress, f"val on {name}")))
        reported.append(vqa_answers(model, test, progress=step(progress, f"test on {name}")))
    return calibrated_cascade(reported, calibration)

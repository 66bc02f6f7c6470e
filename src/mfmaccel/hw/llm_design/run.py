"""What `mfmaccel hw design`, the `design` stage and the benchmark call: tasks and a generator
from names, checked before minutes of generation, then the loop over the suite.

Why here: the CLI, the pipeline and the benchmark take the same choices (which problems, which
model or endpoint), so they are read, and refused in one line, in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mfmaccel.errors import UserInputError
from mfmaccel.hw.llm_design.generators import DEFAULT_DRAFT, EndpointGenerator, EngineGenerator
from mfmaccel.hw.llm_design.loop import LoopSettings, SuiteResult, design_suite
from mfmaccel.hw.llm_design.task import DesignTask
from mfmaccel.hw.llm_design.unit_tasks import SUITE, load_unit_tasks
from mfmaccel.hw.llm_design.verilog_eval import load_verilog_eval
from mfmaccel.hw.rtl.catalog import UNITS

SUITES = ("verilog-eval", SUITE)


def select_tasks(*, task: str | None, suite: str | None, problems: str | None = None,
                 data: str | Path | None = None) -> list[DesignTask]:
    """One named task (`task`: "Prob004" or its full name, or one of our units, "requant"),
    or a suite's problems: all, the first N (`problems="N"`), or a comma list of names. Named
    problems may come from a partial copy (the tests' excerpt); "all" and "the first N" need
    the whole data set."""
    if (task is None) == (suite is None):
        raise UserInputError("name one of --task NAME (e.g. Prob004 or requant) or --suite "
                             f"{' or --suite '.join(SUITES)}")
    if task is not None:
        if problems is not None:
            raise UserInputError("--problems picks from a --suite; with --task, drop it")
        if task in UNITS:
            return load_unit_tasks([task])
        return load_verilog_eval(data, names=[task], complete=False)
    if suite not in SUITES:
        raise UserInputError(f"unknown suite '{suite}'; one of {', '.join(SUITES)}")
    if suite == SUITE:
        return _pick(problems, load_unit_tasks, load_unit_tasks)
    return _pick(problems, lambda: load_verilog_eval(data),
                 lambda names: load_verilog_eval(data, names=names, complete=False))


def _pick(problems: str | None, load_all: Callable[[], list[DesignTask]],
          load_named: Callable[[list[str]], list[DesignTask]]) -> list[DesignTask]:
    """A suite's tasks under `--problems`: all (none given), the first N, or a comma list."""
    if problems is None or not problems.strip():
        return load_all()
    if problems.strip().isdigit():
        count = int(problems)
        if count < 1:
            raise UserInputError(f"--problems must be at least 1, got {count}")
        return load_all()[:count]
    return load_named([n.strip() for n in problems.split(",") if n.strip()])


def make_generator(*, model=None, endpoint: str | None = None, api_model: str | None = None,
                   draft: str | None = DEFAULT_DRAFT):
    """Our engine on `model` (a name, or a LoadedModel already loaded), or the endpoint; the
    endpoint is asked once now, so a dead one is refused before the suite starts."""
    if (model is None) == (endpoint is None):
        raise UserInputError("name one of --model M or --endpoint URL --api-model NAME")
    if endpoint is not None:
        generator = EndpointGenerator(endpoint, api_model or "")
        generator.check()
        return generator
    if api_model is not None:
        raise UserInputError("--api-model goes with --endpoint; with --model, drop it")
    if isinstance(model, str):
        from mfmaccel.models import load_model

        model = load_model(model)
    return EngineGenerator(model, draft=draft)


def design_run(tasks: list[DesignTask], generator, settings: LoopSettings, *,
               progress: Callable[[int, int], None] | None = None) -> SuiteResult:
    """The loop over `tasks` (a thin name for the CLI and the stage)."""
    return design_suite(tasks, generator, settings, progress=progress)


def summary_line(result: SuiteResult) -> str:
    """pass@1, pass with feedback and the passes also security-clean, in one line (the stage's
    notes, the CLI's last line)."""
    line = (f"pass@1 {result.passed_at_1}/{result.problems} ({result.pass_at_1:.1%}); with "
            f"feedback ({result.settings.rounds} rounds, k={result.settings.candidates}) "
            f"{result.passed}/{result.problems} ({result.pass_with_feedback:.1%})")
    if result.secure is not None:
        line += f"; security-clean {result.secure}/{result.passed}"
    return line + (f"; {len(result.skipped)} skipped (reference fails its bench)"
                   if result.skipped else "")

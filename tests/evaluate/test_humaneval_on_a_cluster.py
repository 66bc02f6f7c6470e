"""HumanEval's generation on a loopback Dask cluster of two workers (`parallel.local_cluster`,
started once for the module: a start costs seconds), each loading the model by name: the same
completions and token counts as one single-thread worker (the batches are the jobs, each with
its own seed), and `eval --scheduler` writes the record `--workers 1` writes in this process.
Refusals that need no cluster: tests/test_cli.py, tests/models/test_source.py."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from mfmaccel.cli import app
from mfmaccel.data.code import humaneval_subset, load_humaneval
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.codegen import code_completions
from mfmaccel.evaluate.run import TaskData, measure_task, run_evaluation
from mfmaccel.models.source import ModelSource
from mfmaccel.parallel import Executor, local_cluster
from mfmaccel.runtime.sampling import Sampling


@pytest.fixture(scope="module")
def cluster() -> Iterator[Executor]:
    with local_cluster(2) as address:
        yield Executor(scheduler=address)


@pytest.mark.parametrize(("samples", "sampling"), [(1, None), (2, Sampling(1.5, seed=3))])
def test_completions_on_two_workers_are_one_workers(cluster, tiny_llama, one_thread, samples,
                                                    sampling) -> None:
    problems = humaneval_subset(load_humaneval(), 5)
    settings = {"batch_size": 3, "max_new_tokens": 10, "samples": samples,
                "sampling": sampling}
    with one_thread():
        here = code_completions(tiny_llama, problems, **settings)
    seen: list[tuple[int, int]] = []
    there = code_completions(tiny_llama, problems, **settings, executor=cluster,
                             source=ModelSource("tiny-llama"),
                             progress=lambda done, total: seen.append((done, total)))
    assert there == here and all(len(texts) == samples for texts in there.texts.values())
    assert seen[-1] == (5, 5)


def test_cli_eval_on_a_scheduler_writes_what_one_worker_writes(cluster, tmp_path) -> None:
    """In this process at its own thread count: on tiny-llama the greedy tokens agree (a real
    model's may not where two logits tie to fp32 rounding: docs/sweeps.md)."""
    args = ["eval", "--model", "tiny-llama", "--task", "humaneval", "--limit", "4",
            "--max-new-tokens", "8", "--fuse"]
    records = {}
    for name, where in (("here", ["--workers", "1"]), ("there", ["--scheduler",
                                                                 cluster.scheduler])):
        done = CliRunner().invoke(app, [*args, *where, "--out", str(tmp_path / name)])
        assert done.exit_code == 0, done.output
        records[name] = json.loads((tmp_path / name).read_text())
    assert records["here"]["per_problem"] == records["there"]["per_problem"]
    assert records["here"]["pass_at_k"] == records["there"]["pass_at_k"]


def test_what_cannot_reach_a_worker_is_refused_in_one_line(tiny_llama) -> None:
    """A model held only here, and an adaptation that cannot be pickled; neither starts a
    cluster."""
    elsewhere = Executor(workers=2)
    problems = humaneval_subset(load_humaneval(), 1)
    with pytest.raises(UserInputError, match="held only in this process"):
        measure_task(tiny_llama, TaskData("humaneval", problems, "humaneval"),
                     executor=elsewhere)
    with pytest.raises(UserInputError, match="^[^\n]*cannot go to worker processes[^\n]*$"):
        run_evaluation("tiny-llama", "humaneval", limit=1, executor=elsewhere,
                       adapt=lambda model: model)


def test_a_scheduler_nobody_runs_is_one_line_exit_2(silent_scheduler, tmp_path) -> None:
    done = CliRunner().invoke(app, ["eval", "--model", "tiny-llama", "--task", "humaneval",
                                    "--limit", "1", "--max-new-tokens", "2", "--scheduler",
                                    silent_scheduler, "--out", str(tmp_path / "o.json")])
    assert done.exit_code == 2 and f"no Dask scheduler answers at {silent_scheduler}" in \
        done.output
    assert not (tmp_path / "o.json").exists()

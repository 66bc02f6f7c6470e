"""The sweeps' executor (`mfmaccel.parallel`): jobs in this process without dask, results in job
order, a local cluster that survives a worker dying mid-sweep, and bad settings refused in one
line. Sweeps of the hw layer on a cluster: tests/hw/test_sweeps_on_a_cluster.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.parallel import Executor


def square(value: int) -> int:
    return value * value


def die_once(job: tuple[str, int]) -> int:
    """Job 3 kills its worker process the first time it runs (the marker file remembers)."""
    marker, value = job
    if value == 3 and not Path(marker).exists():
        Path(marker).touch()
        os._exit(1)
    return value * 10


def test_one_worker_runs_here_in_job_order_without_dask() -> None:
    code = ("import sys; from mfmaccel.parallel import Executor; from tests.test_parallel "
            "import square; seen = []; "
            "print(Executor().map(square, [3, 1, 2], sizes=[5, 1, 2], "
            "progress=lambda d, t: seen.append((d, t))), seen, "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).parents[1])
    assert done.stdout.strip() == "[9, 1, 4] [(5, 8), (6, 8), (8, 8)] []"


@pytest.mark.parametrize(("settings", "message"), [
    ({"workers": 0}, "--workers must be at least 1, got 0"),
    ({"workers": 2, "scheduler": "tcp://127.0.0.1:8786"}, "drop --workers"),
    ({"scheduler": "127.0.0.1:8786"}, "tcp://HOST:PORT"),
    ({"scheduler": "tcp://127.0.0.1"}, "tcp://HOST:PORT"),
    ({"scheduler": "tcp://127.0.0.1:port"}, "tcp://HOST:PORT"),
    ({"scheduler": "tls://[::1"}, "tcp://HOST:PORT"),
])
def test_bad_settings_are_refused_in_one_line(settings, message) -> None:
    with pytest.raises(UserInputError, match="^[^\n]*$") as raised:
        Executor(**settings)
    assert message in str(raised.value)


def test_a_worker_dying_mid_sweep_still_gives_every_result_once(tmp_path) -> None:
    marker = tmp_path / "died"
    jobs = [(str(marker), value) for value in range(8)]
    counts: list[int] = []
    environment = dict(os.environ)
    results = Executor(workers=2).map(die_once, jobs, progress=lambda d, t: counts.append(d))
    assert marker.exists()  # a worker did die
    assert results == [value * 10 for value in range(8)]
    assert counts == list(range(1, 9))
    assert dict(os.environ) == environment  # the workers' thread settings stayed theirs


def test_a_scheduler_nobody_runs_fails_fast_in_one_line(silent_scheduler) -> None:
    began = time.perf_counter()
    with pytest.raises(UserInputError, match="^[^\n]*$") as raised:
        Executor(scheduler=silent_scheduler).map(square, [1, 2])
    assert time.perf_counter() - began < 10
    assert f"no Dask scheduler answers at {silent_scheduler}" in str(raised.value)
    assert "dask scheduler" in str(raised.value) and "drop --scheduler" in str(raised.value)

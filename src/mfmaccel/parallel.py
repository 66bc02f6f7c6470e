"""One executor for every long sweep: a function mapped over independent jobs, in this process,
on a local Dask cluster, or on a Dask cluster someone started across machines.

Why one: the design-space exploration and the co-design pricing table are both index ranges of
one numbered design space, so they need the same thing: run the ranges somewhere, get the
results back in job order. Dask distributed gives the cluster (a scheduler, worker processes
restarted by their nannies, a job rerun elsewhere when its worker dies) in pure-Python wheels;
docs/sweeps.md says why not Ray.

Results come back ordered by job index, never by completion, so a sweep's output is the same
byte for byte whatever the number of workers. One worker and no scheduler runs the jobs here,
without importing dask at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from mfmaccel.errors import UserInputError

Job = TypeVar("Job")
Result = TypeVar("Result")

CONNECT_SECONDS = 5  # how long a named scheduler (and one worker on it) may take to answer
LOOPBACK = "127.0.0.1"
# One thread per worker process, set before each worker starts (so before it loads torch's
# OpenMP): N workers on N cores, not N x cores threads; waiting threads sleep (threads.py says
# why). MFMACCEL_THREADS keeps mfmaccel's own setting at one too.
WORKER_ENVIRONMENT = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                      "MFMACCEL_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
# A job whose worker died reruns on another worker, up to this many deaths (distributed's
# default, stated here so the sweep never depends on someone's dask config).
ALLOWED_FAILURES = 3


@dataclass(frozen=True)
class Executor:
    """Where a sweep's jobs run: `workers` processes of a local cluster (1: this process, without
    dask), or the workers of the Dask scheduler at `scheduler` (tcp://HOST:PORT)."""

    workers: int = 1
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise UserInputError(f"--workers must be at least 1, got {self.workers}")
        if self.scheduler is not None and self.workers > 1:
            raise UserInputError(f"--workers {self.workers} with --scheduler {self.scheduler}: "
                                 f"the scheduler's own workers run the jobs; drop --workers")
        if self.scheduler is not None:
            _check_address(self.scheduler)

    @property
    def in_process(self) -> bool:
        return self.workers == 1 and self.scheduler is None

    def map(self, function: Callable[[Job], Result], jobs: Sequence[Job], *,
            sizes: Sequence[int] | None = None,
            progress: Callable[[int, int], None] | None = None) -> list[Result]:
        """`function(job)` for every job, in job order. `function` must be a module-level
        function (workers import it by name). `progress(done, total)` is called as results
        arrive, counting `sizes[i]` items for job i (1 each when None)."""
        tally = _Tally([1] * len(jobs) if sizes is None else list(sizes), progress)
        if not self.in_process:
            with _client(self) as client:
                return _map_on_cluster(client, function, jobs, tally)
        for index, job in enumerate(jobs):
            tally.add(index, function(job))
        return tally.ordered()


IN_PROCESS = Executor()


def check_reachable(executor: Executor, source: object | None, what: str) -> None:
    """Refuse, in one line, jobs for workers off this process when nothing names what they
    compute on (`what`: a model held only in this process has no name a worker could load)."""
    if not executor.in_process and source is None:
        raise UserInputError(f"{what} is held only in this process (no name or folder workers "
                             "could load it from); run with --workers 1")


class _Tally:
    """Results by job index, and the progress count as they arrive in any order."""

    def __init__(self, sizes: list[int], progress: Callable[[int, int], None] | None) -> None:
        self.sizes, self.progress = sizes, progress
        self.done, self.total = 0, sum(sizes)
        self.results: dict[int, Any] = {}

    def add(self, index: int, result: Any) -> None:
        if index in self.results:
            raise RuntimeError(f"job {index} returned twice")
        self.results[index] = result
        self.done += self.sizes[index]
        if self.progress:
            self.progress(self.done, self.total)

    def ordered(self) -> list[Any]:
        return [self.results[i] for i in range(len(self.sizes))]


def _map_on_cluster(client: Any, function: Callable[[Job], Result], jobs: Sequence[Job],
                    tally: _Tally) -> list[Result]:
    """Submit each job under its own key (identical jobs are never merged into one), collect
    as they finish."""
    from distributed import as_completed

    sweep = f"{getattr(function, '__name__', 'job')}-{uuid.uuid4().hex}"
    futures = [client.submit(function, job, key=f"{sweep}-{i}", pure=False)
               for i, job in enumerate(jobs)]
    index = {future.key: i for i, future in enumerate(futures)}
    for future, result in as_completed(futures, loop=client.loop, with_results=True):
        tally.add(index[future.key], result)
    return tally.ordered()


@contextlib.contextmanager
def local_cluster(workers: int) -> Iterator[str]:
    """A loopback cluster of `workers` processes, one thread each, closed at the end; yields its
    scheduler's address. `Executor(workers=N)` starts one per sweep; this keeps one for several
    (`Executor(scheduler=address)`: the tests, benchmarks/sweep_scaling.py)."""
    from distributed import LocalCluster

    with (_cluster_settings(),
          LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host=LOOPBACK,
                       dashboard_address=None, memory_limit=0,
                       silence_logs=logging.CRITICAL) as cluster):
        yield cluster.scheduler_address


@contextlib.contextmanager
def _client(executor: Executor) -> Iterator[Any]:
    """A distributed Client on the named scheduler, or on a local cluster of its own."""
    with _cluster_settings():
        if executor.scheduler is not None:
            with _connect(executor.scheduler) as client:
                yield client
            return
        from distributed import Client

        with (local_cluster(executor.workers) as address,
              Client(address, set_as_default=False) as client):
            yield client


@contextlib.contextmanager
def _cluster_settings() -> Iterator[None]:
    """dask's config for our sweeps, its logs quiet, and this process's environment as it was
    afterwards."""
    import dask
    import distributed  # noqa: F401  first: it adds its defaults to dask's config

    with dask.config.set(_cluster_config()), _quiet_logs(), _environment_kept():
        yield


def _cluster_config() -> dict[str, Any]:
    """Reruns allowed, and the worker environment set before each worker process starts.
    (`local_cluster` sets no memory limit: a sweep's jobs are small, and a nanny that kills a
    worker at its share of a small container's memory would kill the sweep.)"""
    config: dict[str, Any] = {"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}
    for name, value in WORKER_ENVIRONMENT.items():
        config[f"distributed.nanny.pre-spawn-environ.{name}"] = value
    return config


def _connect(address: str) -> Any:
    """A Client on the scheduler at `address` with at least one worker, or one line saying
    what to start."""
    from distributed import Client

    try:
        client = Client(address, timeout=f"{CONNECT_SECONDS}s", set_as_default=False)
    except (OSError, TimeoutError):
        raise UserInputError(f"no Dask scheduler answers at {address} within {CONNECT_SECONDS} "
                             f"s; start one with `dask scheduler` and check the address, or "
                             f"drop --scheduler to run here") from None
    try:
        client.wait_for_workers(1, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError):
        client.close()
        raise UserInputError(f"the Dask scheduler at {address} has no workers; start some with "
                             f"`dask worker {address}`") from None
    return client


def _check_address(address: str) -> None:
    """tcp://HOST:PORT, or one line showing that form."""
    try:
        parts = urlsplit(address)
        well_formed = parts.scheme == "tcp" and bool(parts.hostname) and parts.port is not None
    except ValueError:  # a port that is not a number, an unclosed [IPv6 bracket
        well_formed = False
    if not well_formed:
        raise UserInputError(f"--scheduler {address!r}: give the scheduler's address as "
                             f"tcp://HOST:PORT (`dask scheduler` prints it; port 8786 by "
                             f"default)")


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """distributed's log lines (a worker restarted, keys it could not gather from a dead one)
    stay out of the user's console: the sweep either finishes or raises."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _environment_kept() -> Iterator[None]:
    """os.environ as it was: a nanny sets the worker environment in its own (this) process
    before it starts a worker, which must not leak into what this process starts later."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)

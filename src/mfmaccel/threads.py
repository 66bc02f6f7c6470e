"""CPU thread settings, applied before torch loads its OpenMP runtime.

Why: torch's CPU kernels run on OpenMP (GNU libgomp in the pip wheels, MKL included), whose
threads spin for a while at every barrier by default. Batch-1 decode hits a barrier after every
small matrix-vector product, so when another process takes a core, the spinning thread keeps
its own core busy waiting for a thread that is not running: decode fell from about 18 to 0.5
tokens/s beside one busy process on 2 cores (issue 20). A passive wait puts the waiting thread
to sleep instead, so the other thread can run on its core.

libgomp reads these variables once, when it is loaded, which is when `import torch` runs; after
that, changing them does nothing. So the CLI calls `configure_threads()` before anything imports
torch, and scripts that import torch at their top apply `thread_environment()` to `os.environ`
first. A user's own settings always win: an `OMP_WAIT_POLICY` or `GOMP_SPINCOUNT` already set
keeps the wait as it is, an `OMP_NUM_THREADS` keeps its count, and `MFMACCEL_THREADS` (for
mfmaccel alone) sets the count over both.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from mfmaccel.errors import UserInputError

THREADS_VARIABLE = "MFMACCEL_THREADS"
# A waiting thread sleeps at once (libgomp's spin count becomes 0).
WAIT_SETTINGS = {"OMP_WAIT_POLICY": "PASSIVE"}
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_limit(cpu_max: Path = CGROUP_CPU_MAX) -> int | None:
    """Whole CPUs a cgroup-v2 quota allows ("200000 100000" -> 2), None without a quota: a
    container may see 16 cores and be allowed the time of 2."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def usable_cores() -> int:
    """The cores this process may run on (its affinity), capped by a cgroup CPU quota."""
    cores = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit()
    return min(cores, limit) if limit else cores


def requested_threads(environ: Mapping[str, str]) -> int | None:
    """The count in MFMACCEL_THREADS, None when it is not set."""
    value = environ.get(THREADS_VARIABLE, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise UserInputError(
            f"{THREADS_VARIABLE}={value!r} is not a thread count; set it to a whole number "
            f"of 1 or more, or unset it to use every usable core"
        )
    return int(value)


def thread_environment(
    environ: Mapping[str, str] | None = None, cores: int | None = None
) -> dict[str, str]:
    """The variables to add to `environ` (default os.environ): the passive wait unless the user
    set a wait, and the thread count (MFMACCEL_THREADS, else the user's OMP_NUM_THREADS is
    left alone, else every usable core)."""
    environ = os.environ if environ is None else environ
    settings: dict[str, str] = {}
    if not any(name in environ for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")):
        settings.update(WAIT_SETTINGS)
    threads = requested_threads(environ)
    if threads is not None:
        settings["OMP_NUM_THREADS"] = str(threads)
    elif "OMP_NUM_THREADS" not in environ:
        settings["OMP_NUM_THREADS"] = str(cores or usable_cores())
    return settings


def configure_threads() -> int:
    """Apply `thread_environment()` to this process; returns the thread count torch will use.

    Called after torch was imported, only the count can still change (torch.set_num_threads);
    the wait policy stays what it was when torch loaded.
    """
    os.environ.update(thread_environment())
    threads = os.environ["OMP_NUM_THREADS"]
    if "torch" in sys.modules and threads.isdigit() and int(threads) > 0:
        sys.modules["torch"].set_num_threads(int(threads))
    return int(threads) if threads.isdigit() else usable_cores()

"""Running a program in the sandbox and classifying how it ended (the caller's side)."""

from __future__ import annotations

import os
import select
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from contextlib import suppress
from dataclasses import dataclass
from shutil import rmtree

from mfmaccel.evaluate.sandbox import launcher as launcher_module
from mfmaccel.evaluate.sandbox.launcher import LAUNCH_FAILED, MARKER, PROGRAM, can_traverse

PASSED = "passed"  # exited with status 0
FAILED = "failed"  # non-zero exit, uncaught exception, assertion, crash by a signal
TIMEOUT = "timeout"  # wall-clock or CPU-time limit reached
MEMORY = "memory"  # MemoryError under the address-space limit
OUTPUT_LIMIT = "output_limit"  # stdout/stderr (or a file) reached `file_bytes`
ERROR = "error"  # the sandbox itself could not run the program
STATUSES = (PASSED, FAILED, TIMEOUT, MEMORY, OUTPUT_LIMIT, ERROR)

MODES = ("namespace", "userns", "plain")


@dataclass
class SandboxLimits:
    """Per-program limits. Memory is address space per process, so several processes may use
    up to `max_processes * memory_bytes` together."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30
    file_bytes: int = 1 << 20  # largest file, stdout and stderr included
    max_processes: int = 64
    max_output_bytes: int = 64 * 1024  # of stdout and of stderr returned
    dir_bytes: int = 64 << 20  # total size of the private directory (namespace modes only)


@dataclass
class SandboxResult:
    """What happened to one program; `status` is one of `STATUSES`."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_seconds: float
    truncated: bool = False  # stdout or stderr was cut at `max_output_bytes`
    detail: str = ""  # one line saying why, for failures

    @property
    def passed(self) -> bool:
        return self.status == PASSED


def run_python(source: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run `source` as `__main__` in a fresh sandboxed interpreter and report how it ended."""
    return _run(source, limits or SandboxLimits(), sandbox_mode())


_mode_lock = threading.Lock()
_mode_cache: str | None = None


def sandbox_mode() -> str:
    """The strongest isolation mode that works here (see the module docstring), probed once."""
    global _mode_cache
    with _mode_lock:
        if _mode_cache is None:
            _mode_cache = _detect_mode()
        return _mode_cache


def _detect_mode() -> str:
    forced = os.environ.get("MFMACCEL_SANDBOX_MODE", "")
    if forced in MODES:
        return forced
    candidate = "namespace" if os.geteuid() == 0 else "userns"
    probe = _run("print('ok')", SandboxLimits(wall_seconds=30.0), candidate)
    if probe.passed and probe.stdout.strip() == "ok":
        return candidate
    if os.geteuid() == 0:
        reason = probe.detail or _last_line(probe.stderr) or probe.status
        warnings.warn(
            f"sandbox: namespaces unavailable ({reason}); running code in the weaker plain mode",
            RuntimeWarning,
            stacklevel=3,
        )
    return "plain"


def _run(source: str, limits: SandboxLimits, mode: str) -> SandboxResult:
    """Run one program in `mode`; never raises for anything the program does."""
    start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="mfmaccel-sandbox-")
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                user = _sandbox_user(mode, workdir)
                _prepare_workdir(workdir, source, user)
                command = _launch_argv(mode, workdir, user, limits)
                proc = subprocess.Popen(
                    command,
                    cwd=workdir,
                    env=_child_env(workdir),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
            except OSError as exc:
                elapsed = time.monotonic() - start
                return SandboxResult(ERROR, None, "", "", elapsed, detail=f"cannot start: {exc}")
            timed_out = _wait_and_kill(proc, limits.wall_seconds)
            elapsed = time.monotonic() - start
            return _result(proc.returncode, timed_out, out, err, limits, elapsed)
    finally:
        rmtree(workdir, ignore_errors=True)


def _launch_argv(mode: str, workdir: str, user, limits: SandboxLimits) -> list[str]:
    """The launcher's command line; `_LaunchConfig` reads it back."""
    user_text = "-" if user is None else f"{user[0]}:{user[1]}"
    numbers = (
        limits.cpu_seconds,
        limits.memory_bytes,
        limits.file_bytes,
        limits.max_processes,
        limits.dir_bytes,
    )
    launcher = [sys.executable, "-I", "-B", os.path.abspath(launcher_module.__file__)]
    return (
        launcher + [mode, workdir, user_text, *map(str, map(int, numbers))] + _needed_paths(workdir)
    )


def _sandbox_user(mode: str, workdir: str) -> tuple[int, int] | None:
    """(uid, gid) of `nobody` when running as root and the mode can use it, else None."""
    if os.geteuid() != 0 or mode == "userns":
        return None
    uid, gid = _nobody_ids()
    if mode == "namespace":
        return uid, gid  # unreachable paths are exposed inside the mount namespace
    paths = _needed_paths(workdir)[:-1] + [os.path.dirname(os.path.realpath(workdir))]
    if all(_reachable_by(path, uid, gid) for path in paths):
        return uid, gid
    return None


def _nobody_ids() -> tuple[int, int]:
    try:
        import pwd

        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except (ImportError, KeyError):
        return 65534, 65534


def _needed_paths(workdir: str) -> list[str]:
    """Paths the unprivileged program must reach: the interpreter, its prefixes, its directory."""
    paths = [os.path.realpath(p) for p in (sys.executable, sys.base_prefix, sys.prefix)]
    return sorted(set(paths)) + [os.path.realpath(workdir)]


def _reachable_by(path: str, uid: int, gid: int) -> bool:
    """Whether uid/gid can traverse (or, for a file, execute) `path` and every directory above."""
    current = "/"
    for part in [""] + path.strip("/").split("/"):
        current = os.path.join(current, part)
        try:
            if not can_traverse(os.stat(current), uid, gid):
                return False
        except OSError:
            return False
    return True


def _prepare_workdir(workdir: str, source: str, user: tuple[int, int] | None) -> None:
    """Write the program, create HOME and TMPDIR, and hand the directory to the sandbox user."""
    os.chmod(workdir, 0o700)
    for sub in ("home", "tmp"):
        os.mkdir(os.path.join(workdir, sub), 0o700)
    with open(os.path.join(workdir, PROGRAM), "w", encoding="utf-8") as handle:
        handle.write(source)
    if user is not None:
        for path in (workdir, os.path.join(workdir, "home"), os.path.join(workdir, "tmp")):
            os.chown(path, *user)
        st = os.stat(workdir)
        if st.st_uid != user[0] or not st.st_mode & stat.S_IWUSR:
            raise OSError(f"sandbox directory {workdir} is not writable by uid {user[0]}")


def _child_env(workdir: str) -> dict[str, str]:
    """A minimal environment: nothing inherited, so no tokens or keys leak into the program."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": os.path.join(workdir, "home"),
        "TMPDIR": os.path.join(workdir, "tmp"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }


def _wait_and_kill(proc: subprocess.Popen, wall_seconds: float) -> bool:
    """Wait up to the wall limit, then kill the whole process group; True if it timed out.

    The group is killed while the leader is still unreaped, so its id cannot have been reused.
    """
    timed_out = not _wait_exited(proc.pid, wall_seconds)
    _kill_group(proc.pid)
    proc.wait()
    if timed_out:
        _await_group_gone(proc.pid, 1.0)
    return timed_out


def _wait_exited(pid: int, timeout: float) -> bool:
    """Block until `pid` has exited (without reaping it) or `timeout` passes."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # kernel before 5.3: poll instead
        return _poll_exited(pid, timeout)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(max(0.0, timeout) * 1000))
    finally:
        os.close(pidfd)


def _poll_exited(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.02)


def _kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _await_group_gone(pgid: int, seconds: float) -> None:
    """After a kill, wait (bounded) until nothing in the group is still running.

    Zombies do not count: an orphaned namespace init is reaped by the system's init, whenever.
    """
    deadline = time.monotonic() + seconds
    while _group_running(pgid) and time.monotonic() < deadline:
        _kill_group(pgid)
        time.sleep(0.01)


def _group_running(pgid: int) -> bool:
    """Whether any non-zombie process in /proc belongs to process group `pgid`."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return False
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _read_capped(handle, cap: int) -> tuple[str, int, str]:
    """(first `cap` bytes as text, total size, last 4 KiB as text) of a capture file."""
    size = handle.seek(0, os.SEEK_END)
    handle.seek(0)
    head = handle.read(cap).decode("utf-8", "replace")
    handle.seek(max(0, size - 4096))
    tail = handle.read().decode("utf-8", "replace")
    return head, size, tail


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


def _result(returncode, timed_out, out, err, limits: SandboxLimits, elapsed) -> SandboxResult:
    stdout, out_size, _ = _read_capped(out, limits.max_output_bytes)
    stderr, err_size, err_tail = _read_capped(err, limits.max_output_bytes)
    truncated = max(out_size, err_size) > limits.max_output_bytes
    status, detail = _classify(returncode, timed_out, max(out_size, err_size), err_tail, limits)
    return SandboxResult(status, returncode, stdout, stderr, elapsed, truncated, detail)


def _classify(returncode, timed_out, out_size, err_tail, limits) -> tuple[str, str]:
    last = _last_line(err_tail)
    if timed_out:
        return TIMEOUT, f"wall-clock limit of {limits.wall_seconds:g} s reached; killed"
    if returncode == LAUNCH_FAILED and MARKER in err_tail:
        return ERROR, last
    if returncode == 0:
        return PASSED, ""
    if returncode == -signal.SIGXCPU:
        return TIMEOUT, f"CPU-time limit of {limits.cpu_seconds} s reached"
    if out_size >= limits.file_bytes or "[Errno 27] File too large" in err_tail:
        return OUTPUT_LIMIT, f"output or file size limit of {limits.file_bytes} bytes reached"
    if last.startswith("MemoryError"):
        return MEMORY, f"memory limit of {limits.memory_bytes} bytes reached"
    if returncode is not None and returncode < 0:
        return FAILED, f"killed by {signal.Signals(-returncode).name}"
    return FAILED, last

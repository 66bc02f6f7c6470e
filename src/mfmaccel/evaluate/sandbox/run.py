"""Running a program in the sandbox and classifying how it ended (the caller's side)."""

from __future__ import annotations

import os
import secrets
import select
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from shutil import rmtree

from mfmaccel.evaluate.sandbox import launcher as launcher_module
from mfmaccel.evaluate.sandbox.launcher import CHECKS, PROGRAM, can_traverse

PASSED = "passed"  # ran to its end, every check held, exited with status 0
FAILED = "failed"  # exception, failed check, early exit (even with status 0), crash by a signal
TIMEOUT = "timeout"  # wall-clock or CPU-time limit reached
MEMORY = "memory"  # MemoryError under the address-space limit
OUTPUT_LIMIT = "output_limit"  # stdout/stderr (or a file) reached `file_bytes`
ERROR = "error"  # the sandbox itself could not run the program
STATUSES = (PASSED, FAILED, TIMEOUT, MEMORY, OUTPUT_LIMIT, ERROR)

MODES = ("namespace", "userns", "plain")
FOLDER_PREFIX = "mfmaccel-sandbox-"  # then the owner's pid and a dash: /tmp/mfmaccel-sandbox-PID-*


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
    completed: bool = False  # the program ran to its end (the guard's token line came)
    checks: tuple[bool, ...] = ()  # whether each check held; empty unless `completed`

    @property
    def passed(self) -> bool:
        return self.status == PASSED


def run_python(
    source: str, limits: SandboxLimits | None = None, *, checks: Sequence[str] = ()
) -> SandboxResult:
    """Run `source` as `__main__` in a fresh sandboxed interpreter and report how it ended.

    Each of `checks` (Python statements, e.g. "check(f)" or an assert) runs afterwards in the
    program's namespace, on its own; `result.checks` says which held. The program passes only
    if it ran to its end, every check held and the process then exited 0: the guard says so on
    a channel of its own with a random token made for this run, which the program is never
    shown, so `sys.exit(0)`, `os._exit(0)`, an `atexit` exit or a printed imitation is a failure.
    """
    if any("\0" in check for check in checks):
        raise ValueError("a check contains a NUL character")
    return _run(source, limits or SandboxLimits(), sandbox_mode(), tuple(checks))


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


def _run(
    source: str, limits: SandboxLimits, mode: str, checks: tuple[str, ...] = ()
) -> SandboxResult:
    """Run one program in `mode`; never raises for anything the program does."""
    start = time.monotonic()
    sweep_stale_folders()
    workdir = tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-")
    token = secrets.token_hex(16)
    try:
        with (
            tempfile.TemporaryFile() as out,
            tempfile.TemporaryFile() as err,
            tempfile.TemporaryFile() as report,
        ):
            try:
                user = _sandbox_user(mode, workdir)
                _prepare_workdir(workdir, source, checks, user)
                proc = _start(mode, workdir, user=user, limits=limits, token=token,
                              files=(out, err, report))
            except OSError as exc:
                elapsed = time.monotonic() - start
                return SandboxResult(ERROR, None, "", "", elapsed, detail=f"cannot start: {exc}")
            timed_out = _wait_and_kill(proc, limits.wall_seconds)
            elapsed = time.monotonic() - start
            verdict = _Report.read(report, token, len(checks))
            return _result(proc.returncode, timed_out, out=out, err=err, report=verdict,
                           limits=limits, elapsed=elapsed)
    finally:
        rmtree(workdir, ignore_errors=True)


def _start(mode, workdir, *, user, limits: SandboxLimits, token: str, files) -> subprocess.Popen:
    """Start the launcher in a new session; the token goes through a pipe, read once."""
    out, err, report = files
    token_read, token_write = os.pipe()
    try:
        os.write(token_write, token.encode())
    finally:
        os.close(token_write)
    try:
        fds = {"token_fd": token_read, "report_fd": report.fileno()}
        return subprocess.Popen(
            _launch_argv(mode, workdir, user, limits, **fds),
            cwd=workdir,
            env=_child_env(workdir),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            pass_fds=tuple(fds.values()),
            start_new_session=True,
        )
    finally:
        os.close(token_read)


def _launch_argv(
    mode: str, workdir: str, user, limits: SandboxLimits, *, token_fd: int, report_fd: int
) -> list[str]:
    """The launcher's command line; `_LaunchConfig` reads it back."""
    user_text = "-" if user is None else f"{user[0]}:{user[1]}"
    numbers = (
        limits.cpu_seconds,
        limits.memory_bytes,
        limits.file_bytes,
        limits.max_processes,
        limits.dir_bytes,
        os.getpid(),
        token_fd,
        report_fd,
    )
    launcher = [sys.executable, "-I", "-B", os.path.abspath(launcher_module.__file__)]
    return (
        launcher + [mode, workdir, user_text, *map(str, map(int, numbers))] + _needed_paths(workdir)
    )


def sweep_stale_folders() -> list[str]:
    """Remove sandbox folders whose owner process is gone (an evaluator killed mid-run cannot
    remove its own); returns the ones removed. Each run calls this first."""
    root = tempfile.gettempdir()
    removed = []
    with suppress(OSError):
        for name in os.listdir(root):
            owner = name.removeprefix(FOLDER_PREFIX).split("-", 1)[0]
            if name.startswith(FOLDER_PREFIX) and owner.isdigit() and not _alive(int(owner)):
                rmtree(os.path.join(root, name), ignore_errors=True)
                removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's, alive
    return True


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


def _prepare_workdir(
    workdir: str, source: str, checks: tuple[str, ...], user: tuple[int, int] | None
) -> None:
    """Write the program and its checks, create HOME and TMPDIR, and hand the directory to the
    sandbox user."""
    os.chmod(workdir, 0o700)
    for sub in ("home", "tmp"):
        os.mkdir(os.path.join(workdir, sub), 0o700)
    with open(os.path.join(workdir, PROGRAM), "w", encoding="utf-8") as handle:
        handle.write(source)
    with open(os.path.join(workdir, CHECKS), "w", encoding="utf-8") as handle:
        handle.write("".join(check + "\0" for check in checks))
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

    The group is killed while the leader is still unreaped, so its id cannot have been reused;
    also when the wait is interrupted (Ctrl-C), so nothing outlives the call.
    """
    try:
        timed_out = not _wait_exited(proc.pid, wall_seconds)
    finally:
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


@dataclass
class _Report:
    """What the launcher and the guard said on the report channel, in lines carrying the token
    (anything else there was written by the program and is ignored)."""

    error: str | None = None  # the launcher could not run the program: why
    checks: tuple[bool, ...] | None = None  # None: the program did not reach its end

    @classmethod
    def read(cls, handle, token: str, n_checks: int) -> _Report:
        handle.seek(0)
        prefix = token.encode() + b" "
        report = cls()
        for line in handle.read().split(b"\n"):
            if not line.startswith(prefix):
                continue
            kind, _, rest = line.removeprefix(prefix).partition(b" ")
            if kind == b"error" and report.error is None:
                report.error = rest.decode("utf-8", "replace").strip()
            elif kind == b"done" and len(rest) == n_checks and set(rest) <= set(b"01"):
                report.checks = tuple(bit == ord("1") for bit in rest)
        return report


def _result(
    returncode, timed_out, *, out, err, report: _Report, limits: SandboxLimits, elapsed
) -> SandboxResult:
    stdout, out_size, _ = _read_capped(out, limits.max_output_bytes)
    stderr, err_size, err_tail = _read_capped(err, limits.max_output_bytes)
    size = max(out_size, err_size)
    status, detail = _classify(returncode, timed_out, out_size=size, err_tail=err_tail,
                               report=report, limits=limits)
    return SandboxResult(
        status, returncode, stdout, stderr, elapsed, size > limits.max_output_bytes, detail,
        completed=report.checks is not None, checks=report.checks or (),
    )


def _classify(returncode, timed_out, *, out_size, err_tail, report: _Report, limits):
    """(status, one-line detail) of a finished run."""
    last = _last_line(err_tail)
    if timed_out:
        return TIMEOUT, f"wall-clock limit of {limits.wall_seconds:g} s reached; killed"
    if report.error is not None:
        return ERROR, report.error
    if returncode == 0 and report.checks is not None and all(report.checks):
        return PASSED, ""
    if returncode == -signal.SIGXCPU:
        return TIMEOUT, f"CPU-time limit of {limits.cpu_seconds} s reached"
    if out_size >= limits.file_bytes or "[Errno 27] File too large" in err_tail:
        return OUTPUT_LIMIT, f"output or file size limit of {limits.file_bytes} bytes reached"
    if last.startswith("MemoryError"):
        return MEMORY, f"memory limit of {limits.memory_bytes} bytes reached"
    if returncode is not None and returncode < 0:
        return FAILED, f"killed by {signal.Signals(-returncode).name}"
    if returncode == 0 and report.checks is None:
        why = f"{last}, then " if "Traceback" in err_tail else ""
        return FAILED, f"{why}exited with status 0 before the end of the program"
    if returncode == 0:
        return FAILED, "a check exited with status 0 before it finished"
    if report.checks is not None and all(report.checks):
        return FAILED, f"exited with status {returncode} after its checks held"
    return FAILED, last

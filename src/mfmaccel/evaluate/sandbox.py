"""Run untrusted, model-generated Python in a throw-away, resource-limited child process.

Why: benchmark code (HumanEval and friends) executes whatever a model wrote. A wrong answer may
loop forever, fork without end, allocate all memory, flood the output, delete files or phone
home. `run_python` runs each program in a fresh interpreter, in a private temporary directory,
and always returns a `SandboxResult`; the calling process is never put at risk.

Layers, strongest first; `sandbox_mode()` says which ones this machine got:

* "namespace" (running as root, kernel allows namespaces): the program runs in new PID, mount and
  network namespaces. The whole filesystem is remounted read-only (and nosuid); the private
  directory becomes a tmpfs of `dir_bytes` (so the disk cannot be filled) and /dev/shm a small
  private tmpfs; the network has no interfaces (not even loopback); and the program runs as the
  unprivileged user `nobody` (so RLIMIT_NPROC is real and file permissions apply). When the
  interpreter lives somewhere `nobody` cannot reach (e.g. under /root), the blocking directory is
  replaced, inside the namespace only, by an empty tmpfs holding just the needed entries. Killing
  the launcher's process group kills the namespace's init, which takes every process in the
  namespace with it, including ones that called setsid().
* "userns" (not root, unprivileged user namespaces allowed): the same PID, mount and network
  namespaces and read-only filesystem, inside a user namespace that maps the caller's own uid:
  the program keeps the caller's identity (RLIMIT_NPROC counts the caller's processes) but can
  write only its directory, and has no network.
* "plain" (no namespaces possible): resource limits, a fresh session whose process group is killed
  at the wall-clock limit, and, when running as root and the interpreter is reachable by `nobody`,
  a drop to `nobody`. Otherwise (root that cannot drop) RLIMIT_NPROC does not bind, so a fork
  bomb is only contained by the wall-clock kill of the process group, and writes outside the
  directory and network use are only refused by the in-process guard below. Processes that leave
  the process group (setsid) are not killed. A warning says when a root caller falls back here;
  MFMACCEL_SANDBOX_MODE=plain forces this mode.

In every mode: `python -I -B` (isolated, same interpreter), cwd and HOME/TMPDIR inside a private
0700 directory removed afterwards, a minimal environment (no inherited variables or secrets),
stdin from /dev/null, RLIMIT_CPU/AS/FSIZE/NPROC and RLIMIT_CORE=0 set in the child before the
program's exec, stdout/stderr written to unlinked temporary files bounded by RLIMIT_FSIZE and read
back up to `max_output_bytes` (a flood cannot hang or bloat the parent), and a small in-process
guard run before the program that refuses internet sockets and DNS, and refuses write-mode opens
and file-changing `os` calls on paths outside the private directory. The guard is best effort
(ctypes or a subprocess gets around it); the namespaces and the user drop are what really enforce.

This file doubles as the launcher: the caller runs `python -I -B sandbox.py ARGS...`, and the
launcher sets up namespaces, privileges and limits, then execs the program's interpreter. The
launcher half comes first and imports almost nothing, so each run pays little for it.
"""

from __future__ import annotations

import os
import resource
import stat
import sys

# ----------------------------------------------------------------------------- launcher side
# Runs in the launcher process (this file executed as a script), never in the caller. It only
# uses modules Python loads at startup, plus ctypes for namespaces, to keep each run's start fast.

_LAUNCH_FAILED = 125  # launcher exit status when setting up the sandbox failed
_MARKER = "mfmaccel-sandbox:"  # starts the launcher's one-line error on stderr
_PROGRAM = "main.py"
_SIGKILL = 9
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_MOVE = 8192
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MOUNT_FLAGS = {  # per-mount options kept on remount (the kernel refuses to drop locked ones)
    "nosuid": _MS_NOSUID,
    "nodev": _MS_NODEV,
    "noexec": _MS_NOEXEC,
    "noatime": 1024,
    "nodiratime": 2048,
    "relatime": 1 << 21,
}
_SHM_OPTIONS = "mode=1777,size=64m"
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38

# Runs in the program's interpreter before the program. Best effort: it stops accidents and
# naive attempts; the namespaces and the unprivileged user are the real enforcement. Patching
# `_socket` (rather than `socket`) also covers `socket` when the program imports it later.
_GUARD = r"""
def _mfmaccel_guard():
    import builtins, io, os, sys, _io, _socket, __main__
    root = os.path.realpath(os.getcwd())
    devices = {"/dev/null", "/dev/zero", "/dev/full"}

    def inside(path, dir_fd=None):
        if isinstance(path, int):
            return True
        path = os.fsdecode(os.fspath(path))
        if dir_fd is not None and not os.path.isabs(path):
            path = os.path.join(os.readlink("/proc/self/fd/%d" % dir_fd), path)
        real = os.path.realpath(path)
        return real == root or real.startswith(root + os.sep) or real in devices

    def refuse(path):
        raise PermissionError(13, "sandbox: no writes outside the working directory", str(path))

    real_open = builtins.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in str(mode) for c in "wax+") and not inside(file):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    builtins.open = io.open = _io.open = guarded_open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    real_os_open = os.open

    def guarded_os_open(path, flags, *args, dir_fd=None, **kwargs):
        if flags & write_flags and not inside(path, dir_fd):
            refuse(path)
        return real_os_open(path, flags, *args, dir_fd=dir_fd, **kwargs)

    os.open = guarded_os_open

    def wrap(name, checks):
        real = getattr(os, name, None)
        if real is None:
            return

        def guarded(*args, **kwargs):
            for index, key, fd_key in checks:
                path = args[index] if len(args) > index else kwargs.get(key)
                if path is not None and not inside(path, kwargs.get(fd_key)):
                    refuse(path)
            return real(*args, **kwargs)

        setattr(os, name, guarded)

    one = [(0, "path", "dir_fd")]
    for name in ("remove", "unlink", "rmdir", "mkdir", "chmod", "chown", "lchown", "truncate",
                 "utime", "mkfifo", "mknod", "setxattr", "removexattr"):
        wrap(name, one)
    for name in ("rename", "replace"):
        wrap(name, [(0, "src", "src_dir_fd"), (1, "dst", "dst_dir_fd")])
    wrap("link", [(1, "dst", "dst_dir_fd")])
    wrap("symlink", [(1, "dst", "dir_fd")])

    def no_network(*args, **kwargs):
        raise PermissionError(13, "sandbox: network access is not allowed")

    class GuardedSocket(_socket.socket):
        __slots__ = ()  # socket.socket adds __weakref__ itself

        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if fileno is None and family != _socket.AF_UNIX:
                no_network()
            super().__init__(family, type, proto, fileno)

    _socket.socket = _socket.SocketType = GuardedSocket
    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        setattr(_socket, name, no_network)
    if "socket" in sys.modules:
        sys.modules["socket"].getaddrinfo = no_network
    path = os.path.join(root, "main.py")
    with real_open(path, "rb") as handle:
        source = handle.read()
    sys.argv = [path]
    __main__.__file__ = path
    del __main__._mfmaccel_guard
    return source, path, "exec"

exec(compile(*_mfmaccel_guard()))
"""


class _LaunchConfig:
    """What the caller tells the launcher, as plain argv strings (see `_launch_argv`)."""

    def __init__(self, argv: list[str]) -> None:
        self.mode, self.workdir, user = argv[0], argv[1], argv[2]
        self.user = None if user == "-" else tuple(int(x) for x in user.split(":"))
        numbers = [int(x) for x in argv[3:8]]
        self.cpu_seconds, self.memory_bytes, self.file_bytes, self.max_processes = numbers[:4]
        self.dir_bytes = numbers[4]
        self.expose = argv[8:]


def _launcher_main(argv: list[str]) -> None:
    """Entry point of the launcher; ends by exec'ing the program or exiting with its status."""
    try:
        config = _LaunchConfig(argv)
        if config.mode != "plain":
            status_fd = _enter_namespaces(config.mode == "userns")
            _setup_filesystem(config)
            program = os.fork()
            if program:
                _init_loop(program, status_fd)
        _exec_program(config)
    except Exception as exc:  # any setup failure becomes one line, and status "error"
        os.write(2, f"{_MARKER} {type(exc).__name__}: {exc}\n".encode())
        os._exit(_LAUNCH_FAILED)


_libc_handle = None


def _libc():
    global _libc_handle
    if _libc_handle is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
        libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        _libc_handle = libc
    return _libc_handle


def _check(result: int, what: str) -> None:
    if result != 0:
        import ctypes

        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int,
    data: str = "",
    required: bool = True,
) -> bool:
    """mount(2); raises OSError on failure when `required`, else returns False."""

    def encode(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    result = _libc().mount(
        encode(source), encode(target), encode(fstype), flags, encode(data or None)
    )
    if result != 0 and not required:
        return False
    _check(result, f"mount {target}")
    return True


def _prctl(option: int, value: int) -> None:
    _check(_libc().prctl(option, value, 0, 0, 0), f"prctl {option}")


def _enter_namespaces(user_namespace: bool) -> int:
    """Unshare PID/mount/net (and user) namespaces and fork; the caller continues as PID 1.

    The original process stays outside, waits for that init and exits the way the program did,
    so the caller sees the program's own return code. Returns the fd init reports status on.
    """
    uid, gid = os.getuid(), os.getgid()
    flags = _CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWPID
    _check(_libc().unshare(flags | (_CLONE_NEWUSER if user_namespace else 0)), "unshare")
    if user_namespace:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    read_fd, write_fd = os.pipe()
    init = os.fork()
    if init:
        os.close(write_fd)
        _mirror_exit(init, read_fd)
    os.close(read_fd)
    _prctl(_PR_SET_PDEATHSIG, _SIGKILL)  # if the launcher dies, init and its namespace die too
    return write_fd


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _mirror_exit(init: int, read_fd: int) -> None:
    """Wait for the namespace's init, then exit with the program's wait status."""
    _, init_status = os.waitpid(init, 0)
    report = os.read(read_fd, 64)
    if not report:  # init failed during setup (it printed why) or was killed
        if os.waitstatus_to_exitcode(init_status) != _LAUNCH_FAILED:
            os.write(2, f"{_MARKER} sandbox init ended without a status\n".encode())
        os._exit(_LAUNCH_FAILED)
    status = int(report)
    if os.WIFSIGNALED(status):
        import _signal  # loaded at startup, unlike `signal`

        number = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if number != _SIGKILL:
            _signal.signal(number, _signal.SIG_DFL)
        os.kill(os.getpid(), number)
        os._exit(128 + number)
    os._exit(os.waitstatus_to_exitcode(status))


def _init_loop(program: int, status_fd: int) -> None:
    """PID 1 of the namespace: reap orphans until the program ends, report it, and exit.

    Exiting makes the kernel kill whatever else is still running in the namespace.
    """
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(_LAUNCH_FAILED)
        if pid == program:
            os.write(status_fd, str(status).encode())
            os._exit(0)


def _setup_filesystem(config: _LaunchConfig) -> None:
    """In the new mount namespace: a fresh /proc, the interpreter reachable for the sandbox user,
    and every mount read-only except the private directory."""
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    # A /proc for the new PID namespace; may be refused (e.g. a container's masked /proc).
    _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, required=False)
    if config.user is not None:
        _expose(config.expose, *config.user, config.workdir)
    _private_workdir(config)
    # A private, small /dev/shm (POSIX semaphores, e.g. for multiprocessing), gone with the run.
    shm = _mount("tmpfs", "/dev/shm", "tmpfs", _MS_NOSUID | _MS_NODEV, _SHM_OPTIONS, required=False)
    _remount_readonly([config.workdir] + (["/dev/shm"] if shm else []))


def _private_workdir(config: _LaunchConfig) -> None:
    """Replace the directory, in this namespace only, by a tmpfs of `dir_bytes` holding a copy of
    the program, so the program cannot fill the host's disk; it vanishes with the namespace."""
    workdir = config.workdir
    with open(os.path.join(workdir, _PROGRAM), "rb") as handle:
        source = handle.read()
    uid, gid = config.user if config.user is not None else (os.getuid(), os.getgid())
    options = f"mode=0700,size={max(config.dir_bytes, 1 << 20)},uid={uid},gid={gid}"
    _mount("tmpfs", workdir, "tmpfs", _MS_NOSUID | _MS_NODEV, options)
    for sub in ("home", "tmp"):
        os.mkdir(os.path.join(workdir, sub), 0o700)
        os.chown(os.path.join(workdir, sub), uid, gid)
    with open(os.path.join(workdir, _PROGRAM), "wb") as handle:
        handle.write(source)


def _can_traverse(st: os.stat_result, uid: int, gid: int) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _expose(paths: list[str], uid: int, gid: int, workdir: str) -> None:
    """Make `paths` reachable for uid/gid by shadowing each blocking directory with a tmpfs
    that holds only the entries on those paths (bind-mounted back). Namespace-local."""
    for _ in range(16):
        blockers = _blocking_dirs(paths, uid, gid)
        if not blockers:
            return
        directory, names = next(iter(blockers.items()))
        _shadow_dir(directory, sorted(names), workdir)
    raise OSError(f"cannot make {paths} reachable for uid {uid}")


def _blocking_dirs(paths: list[str], uid: int, gid: int) -> dict[str, set[str]]:
    blockers: dict[str, set[str]] = {}
    for path in paths:
        current = "/"
        for part in path.strip("/").split("/"):
            if not _can_traverse(os.stat(current), uid, gid):
                if current == "/":
                    raise OSError("the root directory is not traversable")
                blockers.setdefault(current, set()).add(part)
                break
            current = os.path.join(current, part)
    return blockers


def _shadow_dir(directory: str, names: list[str], workdir: str) -> None:
    held = []
    for index, name in enumerate(names):
        source = os.path.join(directory, name)
        hold = os.path.join(workdir, f".expose-{index}")
        _mount_target(hold, os.path.isdir(source))
        _mount(source, hold, None, _MS_BIND | _MS_REC)
        held.append((hold, name))
    st = os.stat(directory)
    options = f"mode=0755,size=64k,uid={st.st_uid},gid={st.st_gid}"
    _mount("tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV, options)
    for hold, name in held:
        target = os.path.join(directory, name)
        is_dir = os.path.isdir(hold)
        _mount_target(target, is_dir)
        _mount(hold, target, None, _MS_MOVE)
        (os.rmdir if is_dir else os.unlink)(hold)


def _mount_target(path: str, is_dir: bool) -> None:
    if is_dir:
        os.mkdir(path)
    else:
        open(path, "w").close()


def _unescape(text: str) -> str:
    """Undo mountinfo's octal escapes (\\040 for a space)."""
    head, *rest = text.split("\\")
    return head + "".join(chr(int(part[:3], 8)) + part[3:] for part in rest)


def _mounts() -> list[tuple[str, str]]:
    """(mount point, per-mount options) from /proc/self/mountinfo."""
    with open("/proc/self/mountinfo") as handle:
        return [(_unescape(f[4]), f[5]) for f in (line.split() for line in handle)]


def _remount_readonly(keep: list[str]) -> None:
    """Remount every mount read-only and nosuid, keeping its other flags, except `keep`."""
    for mount_point, options in _mounts():
        if any(mount_point == k or mount_point.startswith(k + "/") for k in keep):
            continue
        flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID
        for option in options.split(","):
            flags |= _MOUNT_FLAGS.get(option, 0)
        _mount(None, mount_point, None, flags, required=mount_point == "/")


def _exec_program(config: _LaunchConfig) -> None:
    """In the program's process: enter the directory, drop privileges, set limits, exec."""
    os.chdir(config.workdir)  # again: after the tmpfs mount this lands on the new directory
    if config.user is not None:
        uid, gid = config.user
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    if config.mode != "plain" or config.user is not None:
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)  # setuid binaries cannot give privileges back
    cpu = max(1, config.cpu_seconds)
    _lower_limit(resource.RLIMIT_CORE, 0, 0)
    _lower_limit(resource.RLIMIT_CPU, cpu, cpu + 1)  # SIGXCPU first, SIGKILL a second later
    _lower_limit(resource.RLIMIT_FSIZE, config.file_bytes, config.file_bytes)
    _lower_limit(resource.RLIMIT_NPROC, config.max_processes, config.max_processes)
    _lower_limit(resource.RLIMIT_AS, config.memory_bytes, config.memory_bytes)
    program = os.path.join(config.workdir, _PROGRAM)
    os.execv(sys.executable, [sys.executable, "-I", "-B", "-c", _GUARD, program])


def _lower_limit(which: int, soft: int, hard: int) -> None:
    """Set a limit, never above the current hard limit (which an unprivileged user cannot raise)."""
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))


if __name__ == "__main__":
    _launcher_main(sys.argv[1:])

# ----------------------------------------------------------------------------- caller side
# Imported only by the caller; the launcher never gets here (it execs or exits above).

import select  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from contextlib import suppress  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from shutil import rmtree  # noqa: E402

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
    launcher = [sys.executable, "-I", "-B", os.path.abspath(__file__)]
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
            if not _can_traverse(os.stat(current), uid, gid):
                return False
        except OSError:
            return False
    return True


def _prepare_workdir(workdir: str, source: str, user: tuple[int, int] | None) -> None:
    """Write the program, create HOME and TMPDIR, and hand the directory to the sandbox user."""
    os.chmod(workdir, 0o700)
    for sub in ("home", "tmp"):
        os.mkdir(os.path.join(workdir, sub), 0o700)
    with open(os.path.join(workdir, _PROGRAM), "w", encoding="utf-8") as handle:
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
    if returncode == _LAUNCH_FAILED and _MARKER in err_tail:
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

"""The sandbox launcher: run as a script (`python -I -B launcher.py ARGS...`) by `run.py`.

It sets up namespaces, privileges and limits, then execs the program's interpreter with the
guard (`guard.py`). It imports only modules Python loads at startup (plus ctypes), so each run
starts fast.

It dies with its caller: a parent-death signal (prctl PR_SET_PDEATHSIG) is set at its start and
again wherever a credential change clears it. In the namespace modes its death kills the
namespace's init, and so every process in the namespace; in plain mode it stays as a watcher
over the program, and kills the program's whole process group when the caller dies.

The caller hands it a pipe holding the run's random token and a report descriptor. The launcher
reports its own failures there as "<token> error <why>" lines (and on stderr for people), so a
program that prints the launcher's error prefix is not taken for one; it passes the token on to
the guard through a fresh pipe, never through a file, an argument or the environment.
"""

from __future__ import annotations

import os
import resource
import stat
import sys

# ----------------------------------------------------------------------------- launcher side
# Runs in the launcher process (this file executed as a script), never in the caller. It only
# uses modules Python loads at startup, plus ctypes for namespaces, to keep each run's start fast.

LAUNCH_FAILED = 125  # launcher exit status when setting up the sandbox failed
MARKER = "mfmaccel-sandbox:"  # starts the launcher's one-line error on stderr
PROGRAM = "main.py"
CHECKS = "checks"  # the checks' sources, each ended by a NUL; guard.py reads and deletes it
GUARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guard.py")
_SIGKILL = 9
_SIGTERM = 15
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


class _LaunchConfig:
    """What the caller tells the launcher, as plain argv strings (see `_launch_argv`)."""

    def __init__(self, argv: list[str]) -> None:
        self.mode, self.workdir, user = argv[0], argv[1], argv[2]
        self.user = None if user == "-" else tuple(int(x) for x in user.split(":"))
        numbers = [int(x) for x in argv[3:11]]
        self.cpu_seconds, self.memory_bytes, self.file_bytes, self.max_processes = numbers[:4]
        self.dir_bytes, self.caller, self.token_fd, self.report_fd = numbers[4:]
        self.expose = argv[11:]


_reporting: tuple[int, bytes] | None = None  # (report fd, token) once the token is read


def _launcher_main(argv: list[str]) -> None:
    """Entry point of the launcher; ends by exec'ing the program or exiting with its status."""
    global _reporting
    try:
        config = _LaunchConfig(argv)
        token = os.read(config.token_fd, 256).strip()
        os.close(config.token_fd)
        _reporting = (config.report_fd, token)
        _die_with(config.caller)
        with open(GUARD, encoding="utf-8") as handle:
            guard = handle.read()
        status_pipe = -1
        if config.mode != "plain":
            status_pipe = _enter_namespaces(config.mode == "userns", config.caller)
            _setup_filesystem(config)
        parent = os.getpid()
        program = os.fork()
        if program == 0:
            _exec_program(config, parent, token, guard)
        elif config.mode == "plain":
            _watch(program, config.caller)
        else:
            _init_loop(program, status_pipe)
    except Exception as exc:  # any setup failure becomes one line, and status "error"
        _fail(f"{type(exc).__name__}: {exc}")


def _fail(why: str) -> None:
    """Say why the sandbox could not run the program (stderr, and the report with the token)."""
    why = " ".join(why.split())
    os.write(2, f"{MARKER} {why}\n".encode())
    if _reporting is not None:
        report_fd, token = _reporting
        try:  # noqa: SIM105 (contextlib is not loaded at startup)
            os.write(report_fd, token + b" error " + why.encode() + b"\n")
        except OSError:
            pass
    os._exit(LAUNCH_FAILED)


def _die_with(parent: int) -> None:
    """SIGKILL this process when `parent` dies (exit at once if it already has)."""
    _prctl(_PR_SET_PDEATHSIG, _SIGKILL)
    if os.getppid() != parent:
        os._exit(LAUNCH_FAILED)


def _watch(program: int, caller: int) -> None:
    """Plain mode: wait for the program and exit as it did; if the caller dies first, kill the
    whole process group (the program and whatever it forked without leaving the group)."""
    import _signal  # loaded at startup, unlike `signal`

    def kill_group(*_) -> None:
        os.killpg(0, _SIGKILL)

    _signal.signal(_SIGTERM, kill_group)
    _prctl(_PR_SET_PDEATHSIG, _SIGTERM)
    if os.getppid() != caller:
        kill_group()
    _, status = os.waitpid(program, 0)
    _exit_like(status)


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
    *,
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


def _enter_namespaces(user_namespace: bool, caller: int) -> int:
    """Unshare PID/mount/net (and user) namespaces and fork; the caller continues as PID 1.

    The original process stays outside, waits for that init and exits the way the program did,
    so the caller sees the program's own return code. Returns the fd init reports status on.
    """
    uid, gid = os.getuid(), os.getgid()
    flags = _CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWPID
    _check(_libc().unshare(flags | (_CLONE_NEWUSER if user_namespace else 0)), "unshare")
    _die_with(caller)  # a new user namespace may have cleared the parent-death signal
    if user_namespace:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    read_fd, write_fd = os.pipe()
    alive_read, alive_write = os.pipe()  # the launcher holds the write end while it lives
    init = os.fork()
    if init:
        os.close(write_fd)
        os.close(alive_read)
        _mirror_exit(init, read_fd)
    os.close(read_fd)
    os.close(alive_write)
    _prctl(_PR_SET_PDEATHSIG, _SIGKILL)  # if the launcher dies, init and its namespace die too
    os.set_blocking(alive_read, False)
    try:
        if os.read(alive_read, 1) == b"":  # end of file: it died before the prctl
            os._exit(LAUNCH_FAILED)
    except BlockingIOError:
        pass
    os.close(alive_read)
    return write_fd


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _mirror_exit(init: int, read_fd: int) -> None:
    """Wait for the namespace's init, then exit with the program's wait status."""
    _, init_status = os.waitpid(init, 0)
    report = os.read(read_fd, 64)
    if not report:  # init failed during setup (it reported why) or was killed
        if os.waitstatus_to_exitcode(init_status) != LAUNCH_FAILED:
            _fail("sandbox init ended without a status")
        os._exit(LAUNCH_FAILED)
    _exit_like(int(report))


def _exit_like(status: int) -> None:
    """Exit with wait status `status`: the same exit code, or death by the same signal."""
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

    Exiting makes the kernel kill whatever else is still running in the namespace. With no
    handler for SIGINT (Python's is the only one), no signal from inside the namespace reaches it.
    """
    import _signal

    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(LAUNCH_FAILED)
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
    the program and its checks, so the program cannot fill the host's disk; it vanishes with the
    namespace."""
    workdir = config.workdir
    files = {}
    for name in (PROGRAM, CHECKS):
        with open(os.path.join(workdir, name), "rb") as handle:
            files[name] = handle.read()
    uid, gid = config.user if config.user is not None else (os.getuid(), os.getgid())
    options = f"mode=0700,size={max(config.dir_bytes, 1 << 20)},uid={uid},gid={gid}"
    _mount("tmpfs", workdir, "tmpfs", _MS_NOSUID | _MS_NODEV, options)
    for sub in ("home", "tmp"):
        os.mkdir(os.path.join(workdir, sub), 0o700)
        os.chown(os.path.join(workdir, sub), uid, gid)
    for name, data in files.items():
        with open(os.path.join(workdir, name), "wb") as handle:
            handle.write(data)


def can_traverse(st: os.stat_result, uid: int, gid: int) -> bool:
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
            if not can_traverse(os.stat(current), uid, gid):
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


def _exec_program(config: _LaunchConfig, parent: int, token: bytes, guard: str) -> None:
    """In the program's process: enter the directory, drop privileges, set limits, exec the
    interpreter with the guard, handing it the token through a fresh pipe."""
    os.chdir(config.workdir)  # again: after the tmpfs mount this lands on the new directory
    if config.user is not None:
        uid, gid = config.user
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    if config.mode != "plain" or config.user is not None:
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)  # setuid binaries cannot give privileges back
    _die_with(parent)  # after the user change, which clears the parent-death signal
    cpu = max(1, config.cpu_seconds)
    _lower_limit(resource.RLIMIT_CORE, 0, 0)
    _lower_limit(resource.RLIMIT_CPU, cpu, cpu + 1)  # SIGXCPU first, SIGKILL a second later
    _lower_limit(resource.RLIMIT_FSIZE, config.file_bytes, config.file_bytes)
    _lower_limit(resource.RLIMIT_NPROC, config.max_processes, config.max_processes)
    _lower_limit(resource.RLIMIT_AS, config.memory_bytes, config.memory_bytes)
    program = os.path.join(config.workdir, PROGRAM)
    token_read, token_write = os.pipe()
    os.write(token_write, token)
    os.close(token_write)
    os.set_inheritable(token_read, True)
    fds = [str(token_read), str(config.report_fd)]
    os.execv(sys.executable, [sys.executable, "-I", "-B", "-c", guard, program, *fds])


def _lower_limit(which: int, soft: int, hard: int) -> None:
    """Set a limit, never above the current hard limit (which an unprivileged user cannot raise)."""
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))


if __name__ == "__main__":
    _launcher_main(sys.argv[1:])

"""The sandbox guard: runs in the program's own interpreter, before and after the program.

Why: a grader must know that a program ran its checks to the end, and an exit status cannot
say so (`sys.exit(0)`, `os._exit(0)` or an `atexit` handler exit 0 without running them). The
launcher passes this file's text to `python -I -B -c`, with the program's path, a pipe holding
the run's random token and the report descriptor as arguments. Before the program the guard
reads and closes the token pipe, reads and deletes the checks file, compiles the checks and
fences off network use and writes outside the working directory (best effort: ctypes or a
subprocess gets around the fences; the namespaces and the unprivileged user really enforce).
After the program it runs each check in the program's namespace and writes one line,
"<token> done <one 1 or 0 per check>", to the report descriptor: the only way the caller learns
that the program reached its end. The program never sees the token in a file, its arguments or
its environment, so it cannot write that line first; to find it, it would have to search its
own interpreter's memory.

Everything here runs as `__main__`, in the program's namespace: the guard removes its own names
before the program starts, and what runs after the program uses only references it took before
(a program may rebind builtins such as `exec` or `enumerate`).
"""

CHECKS = "checks"  # file in the working directory (launcher.CHECKS): each check ended by a NUL


def _mfmaccel_guard():
    """Set up, forget the guard's names, run the program and its checks, report."""
    import sys

    names = [name for name in globals() if name.startswith("_mfmaccel_")]
    path, token_fd, report_fd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    report = _mfmaccel_reporter(token_fd, report_fd)
    program, checks = _mfmaccel_compile(path)
    _mfmaccel_fence_files()
    _mfmaccel_fence_network()
    run = _mfmaccel_runner(path, program, checks, report)
    for name in names + ["CHECKS"]:
        del globals()[name]
    run()


def _mfmaccel_reporter(token_fd, report_fd):
    """Read the token (and close its pipe); return report(text) that writes a line carrying it."""
    import os

    token = os.read(token_fd, 256).strip()
    os.close(token_fd)
    write = os.write

    def report(text):
        write(report_fd, token + b" " + text + b"\n")

    return report


def _mfmaccel_compile(path):
    """The program's and the checks' code objects, compiled before the program can interfere;
    a check that does not compile is None (it fails). The checks file is deleted."""
    import os

    with open(path, "rb") as handle:
        source = handle.read()
    checks_path = os.path.join(os.path.dirname(path), CHECKS)
    with open(checks_path, "rb") as handle:
        texts = handle.read().decode("utf-8").split("\0")[:-1]
    os.unlink(checks_path)
    program = compile(source, path, "exec", dont_inherit=True)
    checks = []
    for number, text in enumerate(texts):
        try:
            checks.append(compile(text, f"<check {number}>", "exec", dont_inherit=True))
        except (SyntaxError, ValueError):
            checks.append(None)
    return program, tuple(checks)


def _mfmaccel_runner(path, program, checks, report):
    """run(): the program as `__main__`, then each check; report the outcomes; re-raise the first
    failed check's exception so the exit status and traceback say why."""
    import builtins
    import sys

    import __main__

    run_code, base_exception, namespace = builtins.exec, BaseException, __main__.__dict__

    def run():
        sys.argv = [path]
        namespace["__file__"] = path
        namespace["__doc__"] = None
        run_code(program, namespace)
        outcomes, first_failure = [], None
        for code in checks:
            try:
                if code is None:
                    raise SyntaxError("the check does not compile")
                run_code(code, namespace)
                outcomes.append(b"1")
            except base_exception as exc:
                outcomes.append(b"0")
                first_failure = exc if first_failure is None else first_failure
        report(b"done " + b"".join(outcomes))
        if first_failure is not None:
            raise first_failure

    return run


def _mfmaccel_fence_files():
    """Refuse write-mode opens and file-changing `os` calls on paths outside the working
    directory (and a few devices)."""
    import _io
    import builtins
    import io
    import os

    root = os.path.realpath(os.getcwd())
    devices = {"/dev/null", "/dev/zero", "/dev/full"}

    def inside(path, dir_fd=None):
        if isinstance(path, int):
            return True
        path = os.fsdecode(os.fspath(path))
        if dir_fd is not None and not os.path.isabs(path):
            path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
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


def _mfmaccel_fence_network():
    """Refuse internet sockets and DNS. Patching `_socket` (rather than `socket`) also covers
    `socket` when the program imports it later."""
    import _socket
    import sys

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


if __name__ == "__main__":
    _mfmaccel_guard()

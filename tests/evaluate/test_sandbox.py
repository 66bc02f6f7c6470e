"""The sandbox survives hostile programs and reports each one's fate correctly.

Every test runs real subprocesses under the strongest mode this machine allows (`sandbox_mode()`);
a few also exercise the "plain" fallback with harmless programs.
"""

from __future__ import annotations

import contextlib
import glob
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from mfmaccel.evaluate.sandbox import SandboxLimits, run_python, sandbox_mode
from mfmaccel.evaluate.sandbox import run as sandbox

FAST = SandboxLimits(wall_seconds=10.0, cpu_seconds=5)
NAMESPACED = sandbox_mode() in ("namespace", "userns")


def _run(source: str, limits: SandboxLimits = FAST):
    return run_python(textwrap.dedent(source), limits)


def _processes_mentioning(*texts: str) -> list[int]:
    """Live processes whose command line contains every one of `texts` (zombies have an empty
    one)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            except OSError:
                continue
            if all(text.encode() in cmdline for text in texts):
                found.append(int(name))
    return found


def _fork_limit_binds() -> bool:
    """RLIMIT_NPROC binds unless we are root and stayed root (plain mode without `nobody`)."""
    if os.geteuid() != 0 or NAMESPACED:
        return True
    return sandbox._sandbox_user("plain", os.path.join(tempfile.gettempdir(), "x")) is not None


def test_correct_program_passes_and_failing_assert_fails():
    ok = _run("print('hello')")
    assert ok.passed and ok.status == "passed" and ok.returncode == 0
    assert ok.stdout == "hello\n"
    bad = _run("assert 1 + 1 == 3, 'arithmetic'")
    assert not bad.passed and bad.status == "failed" and bad.returncode == 1
    assert "AssertionError: arithmetic" in bad.stderr
    assert "AssertionError" in bad.detail


def test_program_runs_as_main_with_limits_set_in_the_child():
    result = _run(
        """
        import resource, sys
        names = ["RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NPROC", "RLIMIT_CORE"]
        print(__name__, [resource.getrlimit(getattr(resource, n))[0] for n in names])
        """,
        SandboxLimits(cpu_seconds=7, memory_bytes=1 << 29, file_bytes=4096, max_processes=20),
    )
    assert result.passed, result.stderr
    name, limits = result.stdout.split(" ", 1)
    assert name == "__main__"
    assert limits.strip() == str([7, 1 << 29, 4096, 20, 0])


def test_environment_is_minimal_private_and_removed(monkeypatch):
    monkeypatch.setenv("MFMACCEL_TEST_SECRET", "hunter2")
    result = _run(
        """
        import os, sys
        print(os.getcwd())
        print(sorted(os.environ))
        here = os.getcwd()
        print(os.environ["HOME"].startswith(here), os.environ["TMPDIR"].startswith(here))
        print(sys.flags.isolated)
        try:
            input()
        except EOFError:
            print("stdin empty")
        """
    )
    assert result.passed, result.stderr
    cwd, env, inside, isolated, stdin = result.stdout.splitlines()
    assert "mfmaccel-sandbox-" in cwd and not os.path.exists(cwd)
    assert "MFMACCEL_TEST_SECRET" not in env and "hunter2" not in result.stdout
    assert inside == "True True" and isolated == "1" and stdin == "stdin empty"


def test_infinite_loop_times_out_promptly():
    start = time.monotonic()
    result = _run("while True:\n    pass\n", SandboxLimits(wall_seconds=1.0, cpu_seconds=30))
    assert result.status == "timeout" and not result.passed
    assert time.monotonic() - start < 3.0
    assert "wall-clock" in result.detail


def test_cpu_limit_stops_a_busy_program():
    result = _run("while True:\n    pass\n", SandboxLimits(wall_seconds=8.0, cpu_seconds=1))
    assert result.status == "timeout"
    assert result.wall_seconds < 7.0


@pytest.mark.skipif(not _fork_limit_binds(), reason="root without a privilege drop: no NPROC")
def test_fork_bomb_is_contained_and_leaves_no_processes():
    start = time.monotonic()
    result = _run(
        """
        import os
        print(os.getcwd(), flush=True)
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """,
        SandboxLimits(wall_seconds=2.0, max_processes=32),
    )
    assert result.status == "timeout"
    assert time.monotonic() - start < 6.0
    workdir = result.stdout.split()[0]
    deadline = time.monotonic() + 2.0
    while _processes_mentioning(workdir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_mentioning(workdir) == []


@pytest.mark.skipif(not NAMESPACED, reason="needs a PID namespace to catch setsid() escapes")
def test_processes_that_leave_the_session_are_killed_too():
    result = _run(
        """
        import os, time
        print(os.getcwd(), flush=True)
        for _ in range(5):
            if os.fork() == 0:
                os.setsid()
                time.sleep(300)
        time.sleep(300)
        """,
        SandboxLimits(wall_seconds=1.5),
    )
    assert result.status == "timeout"
    workdir = result.stdout.split()[0]
    deadline = time.monotonic() + 2.0
    while _processes_mentioning(workdir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_mentioning(workdir) == []


def test_huge_allocation_is_a_memory_failure():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = _run("block = bytearray(64 * 1024**3)\nprint('allocated')")
    assert result.status == "memory" and not result.passed
    assert "MemoryError" in result.stderr and "allocated" not in result.stdout
    grown = _run(
        "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024**2))",
        SandboxLimits(memory_bytes=256 * 1024**2),
    )
    assert grown.status == "memory"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB


def test_deep_recursion_fails_without_hurting_the_parent():
    result = _run("def f(n):\n    return f(n + 1)\nf(0)")
    assert result.status == "failed" and "RecursionError" in result.stderr
    crash = _run(
        """
        import sys
        sys.setrecursionlimit(10**8)
        def f(n):
            return eval("f(n + 1)")
        f(0)
        """
    )
    assert crash.status in ("failed", "memory") and not crash.passed
    assert crash.returncode != 0


def test_writes_outside_the_directory_are_refused():
    token = uuid.uuid4().hex
    targets = [
        os.path.join(tempfile.gettempdir(), f"mfmaccel-escape-{token}-{i}") for i in range(3)
    ]
    targets.append(str(Path(__file__).resolve().parent / f"escape-{token}"))
    shell = f"import subprocess; subprocess.run(['sh', '-c', 'echo x > {targets[2]}'])"
    source = f"""
        import os, pathlib
        attempts = [
            lambda: open({targets[0]!r}, "w").write("x"),
            lambda: os.close(os.open({targets[1]!r}, os.O_WRONLY | os.O_CREAT)),
            lambda: pathlib.Path({targets[3]!r}).write_text("x"),
            lambda: os.rename("main.py", {targets[1]!r}),
        ]
        for attempt in attempts:
            try:
                attempt()
                print("wrote")
            except OSError as exc:
                print("refused", type(exc).__name__)
        {shell if NAMESPACED else ""}
        open("inside.txt", "w").write("fine")
        print(open("inside.txt").read())
    """
    try:
        result = _run(source)
        assert result.passed, result.stderr
        assert "wrote" not in result.stdout
        assert result.stdout.count("refused") == 4 and result.stdout.endswith("fine\n")
        assert not any(os.path.exists(t) for t in targets)
    finally:
        for target in targets:
            if os.path.exists(target):
                os.unlink(target)


def test_network_connections_are_refused():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
        bypass = (
            "import subprocess, sys\n"
            f"rc = subprocess.run([sys.executable, '-c', {connect!r}]).returncode\n"
            "print('bypass rc', rc)\n"
        )
        source = f"""
            import socket
            for target in [("127.0.0.1", {port}), ("example.com", 80)]:
                try:
                    socket.create_connection(target, timeout=2)
                    print("connected")
                except OSError as exc:
                    print("refused", type(exc).__name__)
        """
        result = _run(textwrap.dedent(source) + (bypass if NAMESPACED else ""))
        assert result.passed, result.stderr
        assert "connected" not in result.stdout and result.stdout.count("refused") == 2
        if NAMESPACED:
            assert "bypass rc 1" in result.stdout
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()


def test_output_flood_is_truncated_and_returns_promptly():
    limits = SandboxLimits(wall_seconds=10.0, max_output_bytes=1000)
    start = time.monotonic()
    flood = _run("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", limits)
    assert time.monotonic() - start < 5.0
    assert flood.status == "output_limit" and flood.truncated
    assert flood.stdout == "x" * 1000
    chatty = _run("print('y' * 100_000)\nprint('done')", limits)
    assert chatty.passed and chatty.truncated and len(chatty.stdout) == 1000


def test_concurrent_runs_do_not_interfere():
    results = {}

    def work(i: int) -> None:
        results[i] = _run(f"print({i} * {i})")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[i].passed and results[i].stdout == f"{i * i}\n" for i in range(4))


def test_plain_fallback_runs_and_guards():
    plain = SandboxLimits(wall_seconds=10.0)
    ok = sandbox._run("print(6 * 7)", plain, "plain")
    assert ok.passed and ok.stdout == "42\n"
    bad = sandbox._run("raise SystemExit(3)", plain, "plain")
    assert bad.status == "failed" and bad.returncode == 3
    target = os.path.join(tempfile.gettempdir(), f"mfmaccel-escape-{uuid.uuid4().hex}")
    guarded = sandbox._run(
        f"open({target!r}, 'w')\n", plain, "plain"
    )  # refused by the in-process guard
    assert guarded.status == "failed" and "PermissionError" in guarded.detail
    assert not os.path.exists(target)
    net = sandbox._run("import socket\nsocket.socket()", plain, "plain")
    assert net.status == "failed" and "network" in net.detail



_EVALUATOR = """
import sys
from mfmaccel.evaluate.sandbox import SandboxLimits, run as sandbox
sandbox._run(sys.argv[2], SandboxLimits(wall_seconds=300, cpu_seconds=300), sys.argv[1])
"""
_FORKED_SLEEPER = "import os, time\nif os.fork() == 0:\n    time.sleep(300)\ntime.sleep(300)\n"


def _wait_for(condition, seconds: float) -> bool:
    """Poll `condition` until it holds or `seconds` pass (a bound on a liveness check)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize(
    ("mode", "program"),
    [
        (sandbox_mode(), "while True:\n    pass\n"),
        (sandbox_mode(), "import time\ntime.sleep(300)\n"),
        ("plain", "while True:\n    pass\n"),
        ("plain", _FORKED_SLEEPER),
    ],
)
def test_killing_the_evaluator_kills_the_program_and_its_folder_is_swept(mode, program):
    """SIGKILL of the process that called the sandbox: the program (and what it forked) dies
    at once, far inside its 300 s limits; its folder goes on the next sandbox run."""
    evaluator = subprocess.Popen([sys.executable, "-c", _EVALUATOR, mode, program])
    prefix = os.path.join(tempfile.gettempdir(), f"{sandbox.FOLDER_PREFIX}{evaluator.pid}-")
    try:
        running = _wait_for(lambda: _processes_mentioning("main.py", prefix), 60.0)
        assert running, "the sandboxed program never started"
    finally:
        evaluator.kill()
        evaluator.wait()
    try:
        assert _wait_for(lambda: not _processes_mentioning(prefix), 10.0), "the program survived"
    finally:
        for pid in _processes_mentioning(prefix):  # only after a failure: do not leave them
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    # A SIGKILLed evaluator cannot remove its folder itself; the next sandbox run (this one, or
    # one in any other process on the machine) does.
    assert run_python("x = 1\n", FAST).passed
    assert glob.glob(prefix + "*") == []


def test_sweeping_keeps_folders_of_live_owners():
    live = tempfile.mkdtemp(prefix=f"{sandbox.FOLDER_PREFIX}{os.getpid()}-")
    unnamed = tempfile.mkdtemp(prefix=f"{sandbox.FOLDER_PREFIX}x-")
    try:
        sandbox.sweep_stale_folders()
        assert os.path.isdir(live) and os.path.isdir(unnamed)
    finally:
        os.rmdir(live)
        os.rmdir(unnamed)

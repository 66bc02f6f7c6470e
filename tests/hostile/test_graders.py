"""Graders of generated code cannot be fooled: a completion that exits early (even with status
0), forges the pass line, silences its output or imitates the launcher's error fails; a correct
one still passes. Every case runs in this machine's strongest sandbox mode and in "plain"."""

from __future__ import annotations

import pytest

from mfmaccel.data.code import CodeProblem, load_humaneval
from mfmaccel.decode.selftest import example_tests, self_test
from mfmaccel.evaluate.humaneval import check_completion
from mfmaccel.evaluate.sandbox import SandboxLimits, run_python, sandbox_mode
from mfmaccel.evaluate.sandbox import run as sandbox

LIMITS = SandboxLimits(wall_seconds=20.0, cpu_seconds=10)
WRONG = "    return None\n"

# Tricks a completion can play; each is a complete completion of the prompt's function.
EXITS = {
    "sys.exit(0) at module level": WRONG + "\nimport sys\nsys.exit(0)\n",
    "sys.exit(0) in the function": "    import sys\n    sys.exit(0)\n",
    "os._exit(0) at module level": WRONG + "\nimport os\nos._exit(0)\n",
    "os._exit(0) in the function": "    import os\n    os._exit(0)\n",
    "raise SystemExit(0)": WRONG + "\nraise SystemExit(0)\n",
    "SystemExit in the function": "    raise SystemExit(0)\n",
    "atexit handler calling os._exit(0)": (
        WRONG + "\nimport atexit, os\natexit.register(lambda: os._exit(0))\n"
    ),
    "kills its own process group": WRONG + "\nimport os, signal\nos.killpg(0, signal.SIGKILL)\n",
}
FORGERIES = {
    "prints plausible pass markers": (
        WRONG + "\nimport os, sys\n"
        "for line in ['passed', 'SELFTEST_PASSED 99', 'ok', 32 * '0' + ' done 1']:\n"
        "    print(line, flush=True)\n"
        "    sys.stderr.write(line + '\\n')\n"
        "for fd in range(3, 256):\n"
        "    try:\n"
        "        os.write(fd, (32 * 'f' + ' done 1\\n').encode())\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)\n"
    ),
    "closes stdout and stderr": WRONG + "\nimport os, sys\nos.close(1)\nos.close(2)\nsys.exit(0)\n",
    "redirects stdout and stderr": (
        WRONG + "\nimport io, sys\nsys.stdout = sys.stderr = io.StringIO()\nsys.exit(0)\n"
    ),
    "rebinds the builtins a harness uses": (
        WRONG + "\nimport builtins\n"
        "def exec(*args, **kwargs):\n    return None\n"
        "def enumerate(*args):\n    return []\n"
        "builtins.exec = exec\nbuiltins.enumerate = enumerate\nbuiltins.len = lambda x: 0\n"
        "AssertionError = None\n"
    ),
    "imitates the launcher's error": (
        WRONG + "\nimport os, sys\n"
        "sys.stderr.write('mfmaccel-sandbox: OSError: unshare: Operation not permitted\\n')\n"
        "sys.stderr.flush()\nos._exit(125)\n"
    ),
}


@pytest.fixture(params=sorted({sandbox_mode(), "plain"}))
def mode(request, monkeypatch) -> str:
    monkeypatch.setattr(sandbox, "_mode_cache", request.param)
    return request.param


@pytest.fixture(scope="module")
def problems() -> list[CodeProblem]:
    return load_humaneval()[:5]


@pytest.mark.parametrize("trick", sorted(EXITS) + sorted(FORGERIES))
def test_humaneval_fails_completions_that_exit_early_or_forge(mode, problems, trick):
    completion = {**EXITS, **FORGERIES}[trick]
    result = check_completion(problems[0], completion, LIMITS)
    assert result.status == "failed", (result.status, result.detail, result.stderr)
    assert "SyntaxError" not in result.stderr and "IndentationError" not in result.stderr
    assert not result.passed and result.checks in ((), (False,))


def test_humaneval_canonical_solutions_still_pass(mode, problems):
    for problem in problems:
        result = check_completion(problem, problem.canonical_solution, LIMITS)
        assert result.passed and result.completed and result.checks == (True,), result.detail


def test_exit_status_zero_is_not_a_pass(mode):
    assert run_python("x = 1\n", LIMITS).passed
    for source in ("import sys\nsys.exit(0)\nx = 1\n", "import os\nos._exit(0)\n"):
        result = run_python(source, LIMITS)
        assert result.returncode == 0 and result.status == "failed" and not result.completed
        assert "before the end of the program" in result.detail
    atexit = "import atexit, os\natexit.register(lambda: os._exit(0))\nassert 1 == 2\n"
    result = run_python(atexit, LIMITS)
    assert result.returncode == 0 and result.status == "failed"
    assert result.detail.startswith("AssertionError")


def test_only_the_launcher_reports_a_harness_error(mode, monkeypatch):
    forged = run_python("def f():\n" + FORGERIES["imitates the launcher's error"], LIMITS)
    assert forged.status == "failed" and forged.returncode == 125
    real_argv = sandbox._launch_argv

    def missing_directory(mode, workdir, *args, **kwargs):
        return real_argv(mode, workdir + "-missing", *args, **kwargs)

    monkeypatch.setattr(sandbox, "_launch_argv", missing_directory)
    broken = run_python("x = 1\n", LIMITS)
    assert broken.status == "error" and "FileNotFoundError" in broken.detail, broken


def test_the_token_is_nowhere_the_program_can_read(mode, monkeypatch):
    token = "c0ffee" * 5 + "42"
    monkeypatch.setattr(sandbox.secrets, "token_hex", lambda _: token)
    search = """
import glob, os
places = {"environ": open("/proc/self/environ", "rb").read(),
          "cmdline": open("/proc/self/cmdline", "rb").read()}
for path in glob.glob("**", recursive=True):
    if os.path.isfile(path):
        places[path] = open(path, "rb").read()
for fd in os.listdir("/proc/self/fd"):
    try:
        os.lseek(int(fd), 0, os.SEEK_SET)
    except OSError:
        pass
    try:
        os.set_blocking(int(fd), False)
        places["fd " + fd] = os.read(int(fd), 1 << 16)
    except OSError:
        pass
token = ("c0ffee" * 5 + "42").encode()  # not written out whole: main.py is searched too
print(sorted(name for name, data in places.items() if token in data))
"""
    result = run_python(search, LIMITS)
    assert result.passed, result.stderr
    assert result.stdout == "[]\n"


def _toy() -> CodeProblem:
    prompt = ('def double(x):\n    """Twice x.\n    >>> double(2)\n    4\n'
              '    double(5) => 10\n    double(0) == 0\n    """\n')
    return CodeProblem("Toy/0", prompt, "    return 2 * x\n", "", "double")


@pytest.mark.parametrize("trick", sorted(EXITS) + sorted(FORGERIES))
def test_self_test_counts_nothing_for_a_completion_that_exits_or_forges(mode, trick):
    problem = _toy()
    tests = example_tests(problem)
    completion = {**EXITS, **FORGERIES}[trick]
    assert self_test(problem, completion, tests, LIMITS).passed == 0


def test_self_test_still_counts_real_passes(mode):
    problem = _toy()
    tests = [*example_tests(problem), "assert double(1) == 3"]
    assert self_test(problem, problem.canonical_solution, tests, LIMITS).passed == 3
    shouting = "    print('SELFTEST_PASSED 4')\n    return 2 * x if x else 1\n"
    assert self_test(problem, shouting, tests, LIMITS).passed == 2

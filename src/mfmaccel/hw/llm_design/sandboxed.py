"""Running EDA tools on untrusted Verilog inside the sandbox (`evaluate.sandbox`).

Why: Icarus runs a model's design, and verilator and yosys parse it; all three are inputs an
attacker writes. `run_tools` hands the files and the command lines to a small Python driver
that `run_python` runs in its private folder (namespaces, read-only filesystem, no network,
an unprivileged user where the machine allows, and the time, memory, file-size and process
limits of `SandboxLimits`). The driver runs the commands one after another, each in its own
process group killed at the deadline, with stdout and stderr in a file (so a flood ends at the
file-size limit, SIGXFSZ, instead of filling memory), and prints one JSON line with each
step's exit status and the head and tail of its output. The sandbox's own token proves that
the driver, not the tools, wrote that line's run to its end.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.sandbox import SandboxLimits, run_python

MARKER = "mfmaccel-tools-result "
HEAD_BYTES = 6000
TAIL_BYTES = 3000
_MARGIN_SECONDS = 2.0  # the driver's own start and report, inside the sandbox's wall limit

_DRIVER = r'''
import json, os, signal, subprocess, time

SPEC = json.loads(SPEC_TEXT)
for name, text in SPEC["files"].items():
    with open(name, "w", encoding="utf-8") as handle:
        handle.write(text)
deadline = time.monotonic() + SPEC["budget"]
steps = []
for argv in SPEC["steps"]:
    log_name = "step%d.log" % len(steps)
    remaining = deadline - time.monotonic()
    returncode, timed_out, started = None, remaining <= 0, time.monotonic()
    if not timed_out:
        with open(log_name, "wb") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                returncode = proc.wait(remaining)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                proc.wait()
    size = os.path.getsize(log_name) if os.path.exists(log_name) else 0
    head = tail = b""
    if size:
        with open(log_name, "rb") as log:
            head = log.read(SPEC["head"])
            log.seek(max(len(head), size - SPEC["tail"]))
            tail = log.read()
    steps.append({"returncode": returncode, "timed_out": timed_out, "size": size,
                  "seconds": time.monotonic() - started,
                  "head": head.decode("utf-8", "replace"),
                  "tail": tail.decode("utf-8", "replace")})
    if timed_out or returncode != 0:
        break
print(MARKER + json.dumps(steps), flush=True)
'''


@dataclasses.dataclass
class StepResult:
    """One command's end: exit status (None if killed at the deadline or never started), the
    size of its output and that output's head and tail."""

    returncode: int | None
    timed_out: bool
    size: int
    head: str
    tail: str
    seconds: float = 0.0

    @property
    def text(self) -> str:
        return self.head + self.tail


@dataclasses.dataclass
class ToolRun:
    """What `run_tools` learned: the steps that ran (a failed step ends the list), or why the
    sandbox itself stopped the driver (`sandbox_status` other than "passed")."""

    steps: list[StepResult]
    sandbox_status: str
    sandbox_detail: str
    seconds: float

    @property
    def completed(self) -> bool:
        return self.sandbox_status == "passed"


def tool_path(name: str) -> str:
    """The absolute path of a tool, or a one-line refusal naming how to install it."""
    found = shutil.which(name)
    if found is None:
        raise UserInputError(f"{name} is not installed; `make toolchain` installs it "
                             f"(apt-get install iverilog verilator yosys)")
    return found


def run_tools(files: dict[str, str], steps: list[list[str]], limits: SandboxLimits) -> ToolRun:
    """Write `files` (name -> text) into a sandbox folder and run `steps` there in order,
    stopping at the first that fails; all of it within `limits`."""
    for name in files:
        if "/" in name or name.startswith("."):
            raise ValueError(f"file names must be plain: {name!r}")
    spec = {"files": files, "steps": steps, "head": HEAD_BYTES, "tail": TAIL_BYTES,
            "budget": max(1.0, limits.wall_seconds - _MARGIN_SECONDS)}
    source = (f"SPEC_TEXT = {json.dumps(spec)!r}\nMARKER = {MARKER!r}\n" + _DRIVER)
    result = run_python(source, limits)
    found = [line for line in result.stdout.splitlines() if line.startswith(MARKER)]
    parsed = [StepResult(**step) for step in json.loads(found[-1][len(MARKER):])] if found else []
    return ToolRun(parsed, result.status, result.detail, result.wall_seconds)

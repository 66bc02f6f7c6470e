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

Passing is proven, not assumed from an exit status: after the program (and the caller's
`checks`, run in its namespace) the guard writes a line carrying a random token made for this
run to a report channel of its own; the program is never shown the token (it reaches the guard
through a pipe that is read and closed first), so an early `sys.exit(0)`, `os._exit(0)`, an
`atexit` exit or a printed imitation fails. The launcher's own failures come on the same channel
with the same token, so a program cannot pass itself off as one.

Lifecycle: the launcher and the program carry a parent-death signal, so killing the evaluator
(even with SIGKILL) kills the program and its process group or namespace at once. Each private
directory is named after its owner (/tmp/mfmaccel-sandbox-<pid>-*); one left by a killed
evaluator is removed by the next sandbox run anywhere on the machine (`sweep_stale_folders`).

Files: `run.py` (the caller's side: `run_python`, limits, results), `launcher.py` (run as a
script for each program: namespaces, privileges, limits, then exec), `guard.py` (run in the
program's interpreter around the program: fences, checks, the token line).
"""

from mfmaccel.evaluate.sandbox.run import (
    ERROR,
    FAILED,
    MEMORY,
    MODES,
    OUTPUT_LIMIT,
    PASSED,
    STATUSES,
    TIMEOUT,
    SandboxLimits,
    SandboxResult,
    run_python,
    sandbox_mode,
    sweep_stale_folders,
)

__all__ = [
    "ERROR", "FAILED", "MEMORY", "MODES", "OUTPUT_LIMIT", "PASSED", "STATUSES", "TIMEOUT",
    "SandboxLimits", "SandboxResult", "run_python", "sandbox_mode", "sweep_stale_folders",
]

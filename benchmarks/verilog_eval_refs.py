"""VerilogEval v2's references against their own testbenches (issue 26): each problem's
`RefModule`, renamed `TopModule`, compiled with its bench under Icarus (`iverilog -g2012`) and
simulated, in the sandbox, through the same harness a model's answer goes through
(`hw.llm_design.references`). Records pass or fail per problem, why, the samples run and the
seconds; the count that pass is the denominator of every pass rate the loop reports.
Prints JSON.

Usage: python benchmarks/verilog_eval_refs.py [--data DIR] [--problems Prob001 Prob004 ...]
       [--record]
`--record` also writes benchmarks/results/<date>-verilog-eval-refs-at-<commit>.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from mfmaccel.hw.llm_design.references import check_references
from mfmaccel.hw.llm_design.verilog_eval import default_directory, load_verilog_eval


def _version(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) \
        else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="the verilog-eval-v2 folder")
    parser.add_argument("--problems", nargs="*", default=None)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    tasks = load_verilog_eval(args.data, names=args.problems)

    def progress(check) -> None:
        print(f"{check.task}: {check.status} {check.detail}".rstrip(), file=sys.stderr)

    checks = check_references(tasks, on_result=progress)
    passed = [c.task for c in checks if c.passed]
    report = {
        "data": str(args.data or default_directory()),
        "icarus": _version(["iverilog", "-V"]),
        "problems": len(checks),
        "passed": len(passed),
        "failed": [c.task for c in checks if not c.passed],
        "checks": [c.to_dict() for c in checks],
        "seconds": round(time.perf_counter() - started, 1),
    }
    options = ["subset"] if args.problems else []
    path = recordfile.record_path(["verilog-eval-refs", *options], recordfile.commit()) \
        if args.record else None
    recordfile.emit(report, path)


if __name__ == "__main__":
    main()

"""What the test suite needs from the machine, and what CI does when it is missing.

Locally a test whose tool is missing (no iverilog, no g++ for the int8 kernel, no namespaces for
the sandbox) skips, so a laptop without an HDL toolchain can still run the rest. CI sets
MFMACCEL_REQUIRE_TOOLS=1 (.ci/run): then a missing tool stops the run before any test, and any
test that skips anyway fails, so a green CI always means the strongest tests ran.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

REQUIRE_TOOLS = "MFMACCEL_REQUIRE_TOOLS"
# g++ builds the int8 decode kernel; iverilog simulates, verilator lints, yosys synthesizes RTL,
# nextpnr-ice40 places and routes it on an FPGA.
REQUIRED_TOOLS = ("g++", "iverilog", "verilator", "yosys", "nextpnr-ice40")


def tools_required(environ: dict[str, str] | None = None) -> bool:
    return (os.environ if environ is None else environ).get(REQUIRE_TOOLS) == "1"


def missing_tools(which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """The required command-line tools that `which` cannot find."""
    return [tool for tool in REQUIRED_TOOLS if which(tool) is None]


def missing_tools_message(missing: list[str]) -> str:
    return (f"{REQUIRE_TOOLS}=1 but {', '.join(missing)} not found on PATH; install them "
            "(make toolchain, or apt-get install g++ iverilog verilator yosys nextpnr-ice40)")


def skip_is_failure(reason: str) -> str:
    """The failure text of a test that skipped while every tool is required."""
    return f"skipped while {REQUIRE_TOOLS}=1 (CI runs every test): {reason}"

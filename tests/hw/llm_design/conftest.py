"""Tasks for the tests: three VerilogEval v2 problems kept in tests/fixtures (so CI needs no
data set), and the tools they need (a missing one skips locally, fails in CI)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mfmaccel.hw.llm_design.task import DesignTask
from mfmaccel.hw.llm_design.verilog_eval import load_verilog_eval

EXCERPT = Path(__file__).resolve().parents[2] / "fixtures" / "verilog_eval_v2"
needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None or shutil.which("vvp") is None,
                                  reason="iverilog is not installed (make toolchain installs it)")
needs_verilator = pytest.mark.skipif(shutil.which("verilator") is None,
                                     reason="verilator is not installed (make toolchain)")
needs_yosys = pytest.mark.skipif(shutil.which("yosys") is None,
                                 reason="yosys is not installed (make toolchain installs it)")


@pytest.fixture(scope="session")
def excerpt_tasks() -> dict[str, DesignTask]:
    return {task.name.split("_", 1)[0]: task
            for task in load_verilog_eval(EXCERPT, complete=False)}


@pytest.fixture(scope="session")
def vector2(excerpt_tasks) -> DesignTask:
    """Prob004: reverse the byte order of a 32-bit word (110 samples)."""
    return excerpt_tasks["Prob004"]

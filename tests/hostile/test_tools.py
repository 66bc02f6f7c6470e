"""CI cannot pass with the strongest tests skipped: under MFMACCEL_REQUIRE_TOOLS=1 a missing tool
stops the test run, and a test that skips anyway fails (tests/toolcheck.py, tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.toolcheck import REQUIRE_TOOLS, REQUIRED_TOOLS, missing_tools

REPO = Path(__file__).resolve().parents[2]


def _pytest(args: list[str], env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _path_without(tool: str, folder: Path) -> str:
    """A PATH holding every required tool but `tool`, as on a machine where it is not installed."""
    folder.mkdir()
    for other in REQUIRED_TOOLS:
        if other != tool and (found := shutil.which(other)):
            (folder / other).symlink_to(found)
    return str(folder)


def test_missing_tools_names_each_absent_tool() -> None:
    present = {"g++", "iverilog", "yosys", "nextpnr-ice40"}
    assert missing_tools(lambda t: f"/usr/bin/{t}" if t in present else None) == ["verilator"]
    assert missing_tools(lambda t: f"/usr/bin/{t}") == []


def test_ci_run_without_verilator_fails(tmp_path: Path) -> None:
    env = {**os.environ, REQUIRE_TOOLS: "1", "PATH": _path_without("verilator", tmp_path / "bin")}
    result = _pytest([f"{Path(__file__).name}::test_missing_tools_names_each_absent_tool"],
                     env, cwd=REPO / "tests" / "hostile")
    assert result.returncode != 0
    assert "verilator not found" in result.stdout + result.stderr
    assert "1 passed" not in result.stdout


def test_without_the_variable_a_missing_tool_only_skips(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != REQUIRE_TOOLS}
    env["PATH"] = _path_without("verilator", tmp_path / "bin")
    result = _pytest([f"{Path(__file__).name}::test_missing_tools_names_each_absent_tool"],
                     env, cwd=REPO / "tests" / "hostile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_skip_fails_when_tools_are_required(tmp_path: Path) -> None:
    (tmp_path / "test_skipping.py").write_text(textwrap.dedent("""
        import pytest

        def test_needs_a_tool():
            pytest.skip("iverilog is not installed")
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    plugin = ["-p", "tests.conftest", str(tmp_path / "test_skipping.py")]
    required = _pytest(plugin, {**env, REQUIRE_TOOLS: "1"}, cwd=tmp_path)
    assert required.returncode == 1 and "1 failed" in required.stdout
    assert "iverilog is not installed" in required.stdout
    relaxed = _pytest(plugin, {k: v for k, v in env.items() if k != REQUIRE_TOOLS}, cwd=tmp_path)
    assert relaxed.returncode == 0 and "1 skipped" in relaxed.stdout

"""Thread settings: the passive OpenMP wait and the thread count reach torch's OpenMP runtime
from the CLI and the benchmarks, and a user's own settings always win (no timings here)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.threads import (
    cgroup_cpu_limit,
    configure_threads,
    thread_environment,
    usable_cores,
)

REPO = Path(__file__).resolve().parents[1]
THREAD_VARIABLES = ("OMP_", "GOMP_", "KMP_", "MKL_NUM_THREADS", "MFMACCEL_THREADS")
# Imports the CLI module first, then torch (as every command does), and says what torch got.
PROBE = ("import os, mfmaccel.cli, torch, json; print(json.dumps({'threads': "
         "torch.get_num_threads(), 'wait': os.environ.get('OMP_WAIT_POLICY')}))")


def clean_env(**settings: str) -> dict[str, str]:
    """This environment without any thread variable (pytest's own may carry ours), plus
    `settings`; OMP_DISPLAY_ENV makes libgomp print what it read when torch loaded it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(THREAD_VARIABLES)}
    return {**env, "OMP_DISPLAY_ENV": "true", **settings}


def probe_cli(**settings: str) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", PROBE], env=clean_env(**settings),
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), done.stdout + done.stderr


def test_defaults_are_a_passive_wait_on_every_usable_core() -> None:
    assert thread_environment({}, cores=3) == {"OMP_WAIT_POLICY": "PASSIVE",
                                               "OMP_NUM_THREADS": "3"}
    assert thread_environment({})["OMP_NUM_THREADS"] == str(usable_cores())


@pytest.mark.parametrize("user", [{"OMP_WAIT_POLICY": "active"}, {"GOMP_SPINCOUNT": "1000"}])
def test_a_users_wait_setting_is_kept_whole(user: dict[str, str]) -> None:
    settings = thread_environment(user, cores=2)
    assert "OMP_WAIT_POLICY" not in settings and "GOMP_SPINCOUNT" not in settings


def test_a_users_thread_count_is_kept_and_mfmaccel_threads_wins() -> None:
    assert "OMP_NUM_THREADS" not in thread_environment({"OMP_NUM_THREADS": "1"}, cores=2)
    both = {"OMP_NUM_THREADS": "4", "MFMACCEL_THREADS": "1"}
    assert thread_environment(both, cores=2)["OMP_NUM_THREADS"] == "1"
    assert thread_environment({"MFMACCEL_THREADS": " 3 "}, cores=2)["OMP_NUM_THREADS"] == "3"


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_mfmaccel_threads_names_the_fix(value: str) -> None:
    with pytest.raises(UserInputError, match="MFMACCEL_THREADS=.*whole number of 1 or more"):
        thread_environment({"MFMACCEL_THREADS": value})


@pytest.mark.parametrize(("text", "cpus"), [("200000 100000\n", 2), ("150000 100000", 2),
                                            ("50000 100000", 1), ("max 100000", None)])
def test_a_cgroup_quota_caps_the_cores(tmp_path: Path, text: str, cpus: int | None) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(text)
    assert cgroup_cpu_limit(cpu_max) == cpus
    assert cgroup_cpu_limit(tmp_path / "absent") is None


def test_after_torch_loaded_only_the_count_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", str(before))  # these three restored after the test
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("MFMACCEL_THREADS", "1")
    try:
        assert configure_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_cli_sets_the_wait_before_torch_loads_openmp() -> None:
    got, output = probe_cli()
    assert got == {"threads": usable_cores(), "wait": "PASSIVE"}
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in output  # what libgomp itself read


def test_the_cli_keeps_the_users_settings() -> None:
    got, output = probe_cli(OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="1")
    assert got == {"threads": 1, "wait": "ACTIVE"}
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in output
    got, _ = probe_cli(OMP_NUM_THREADS="2", MFMACCEL_THREADS="1")
    assert got["threads"] == 1


def test_a_bad_mfmaccel_threads_ends_the_cli_with_one_line() -> None:
    mfmaccel = Path(sys.executable).with_name("mfmaccel")
    done = subprocess.run([str(mfmaccel), "models"], env=clean_env(MFMACCEL_THREADS="lots"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "error: MFMACCEL_THREADS='lots' is not a thread count; set it to a whole number of 1 or "
        "more, or unset it to use every usable core"]


def _loads_torch(node: ast.stmt) -> bool:
    """An import of torch or of mfmaccel (which loads torch) other than mfmaccel.threads."""
    names = ([a.name for a in node.names] if isinstance(node, ast.Import)
             else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
    return any(n.split(".")[0] in ("torch", "mfmaccel", "decode", "transformers")
               and n != "mfmaccel.threads" for n in names)


def _applies_thread_environment(node: ast.stmt) -> bool:
    return "os.environ.update(thread_environment())" in ast.unparse(node)


def _loads_torch_itself(script: Path) -> bool:
    """Whether a script loads torch in its own process (one that only runs the `mfmaccel`
    command, which sets its threads itself, does not)."""
    return any(_loads_torch(node) for node in ast.parse(script.read_text()).body)


BENCHMARKS = sorted(p for p in (REPO / "benchmarks").glob("*.py")
                    if p.name not in ("scalesim_runner.py", "contention.py")
                    and _loads_torch_itself(p))


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_every_benchmark_sets_threads_before_torch_loads(script: Path) -> None:
    body = ast.parse(script.read_text()).body
    first_torch = next(i for i, node in enumerate(body) if _loads_torch(node))
    assert any(_applies_thread_environment(node) for node in body[:first_torch]), script.name


def test_a_benchmark_hands_the_passive_wait_to_openmp() -> None:
    done = subprocess.run([sys.executable, "benchmarks/decode.py", "--help"], env=clean_env(),
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in done.stdout + done.stderr


def _contention_module():
    spec = importlib.util.spec_from_file_location("contention", REPO / "benchmarks/contention.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_contention_settings_say_what_openmp_gets() -> None:
    contention = _contention_module()
    assert contention.setting_environment("old") == {}
    assert contention.setting_environment("new") == thread_environment({})
    assert contention.setting_environment("wait=active,threads=1,spin=500") == {
        "OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1", "GOMP_SPINCOUNT": "500"}
    with pytest.raises(SystemExit, match="bad setting"):
        contention.setting_environment("wait=sometimes")


def test_contention_benchmark_runs_both_settings(tmp_path: Path) -> None:
    out = tmp_path / "contention.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/contention.py", "--models", "tiny-llama", "--repeats", "1",
         "--new-tokens", "4", "--out", str(out)],
        env=clean_env(), capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert record["settings"]["new"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert record["settings"]["old"] == {}
    for row in record["models"]["tiny-llama"].values():
        assert len(row["alone_tokens_per_s"]) == len(row["beside_tokens_per_s"]) == 1
        assert row["alone_median"] > 0 and row["beside_over_alone"] > 0
    assert set(record["new_over_old"]["tiny-llama"]) == {"alone", "beside"}

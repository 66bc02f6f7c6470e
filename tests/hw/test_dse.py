"""Design-space exploration: the numbering of design points, the index ranges (jobs) that cover
the sweep, the Pareto front, constraints, and the CLI commands around the performance model.
Sweeps on a cluster: test_sweeps_on_a_cluster.py."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from mfmaccel.cli import app
from mfmaccel.errors import UserInputError
from mfmaccel.hw.dse import (
    SWEEP_JOBS,
    Constraints,
    DesignPoint,
    DesignSpace,
    evaluate_range,
    explore,
    pareto_front,
    sweep_ranges,
)
from mfmaccel.hw.trace import workload_for_spec

SMALL = DesignSpace(rows=(8, 16), cols=(8, 16), a_buffer_kib=(32,), b_buffer_kib=(64, 256),
                    out_buffer_kib=(16,), bandwidth_gbs=(8.5, 25.6), clock_mhz=(200, 400),
                    vector_lanes=(16,), weight_bits=(4, 8))


@pytest.fixture(scope="module")
def roberta():
    return workload_for_spec("roberta-base", 32)


def _point(index: int, latency: float, energy: float, area: float) -> DesignPoint:
    return DesignPoint(index, {}, latency, energy, area, 1.0)


def test_every_index_is_a_distinct_design() -> None:
    designs = {tuple(sorted(SMALL.values(i).items())) for i in range(SMALL.size)}
    assert SMALL.size == 64 and len(designs) == 64


def test_jobs_cover_the_sweep_exactly_once() -> None:
    for size in (1, 5, 64, 1000):
        ranges = sweep_ranges(size)
        assert [i for a, b in ranges for i in range(a, b)] == list(range(size))
        assert all(b > a for a, b in ranges) and len(ranges) == min(size, SWEEP_JOBS)


def test_jobs_evaluated_apart_equal_one_run(roberta) -> None:
    whole, _ = evaluate_range(roberta, SMALL, 0, SMALL.size)
    bounds = [0, 21, 42, SMALL.size]
    parts = [p for a, b in zip(bounds, bounds[1:], strict=False)
             for p in evaluate_range(roberta, SMALL, a, b)[0]]
    assert [p.to_dict() for p in parts] == [p.to_dict() for p in whole]


def test_pareto_front_keeps_exactly_the_undominated() -> None:
    points = [_point(0, 1, 5, 5), _point(1, 2, 2, 2), _point(2, 3, 3, 3), _point(3, 5, 1, 9),
              _point(4, 2, 2, 2)]
    assert [p.index for p in pareto_front(points)] == [0, 1, 3]


def test_explore_front_is_undominated_and_halving_bits_never_slows(roberta) -> None:
    result = explore(roberta, SMALL)
    assert result.evaluated == SMALL.size and result.front
    for p in result.front:
        assert not any(q.latency_ms <= p.latency_ms and q.energy_mj <= p.energy_mj
                       and q.area_mm2 <= p.area_mm2 and q.to_dict() != p.to_dict()
                       and (q.latency_ms, q.energy_mj, q.area_mm2)
                       != (p.latency_ms, p.energy_mj, p.area_mm2) for q in result.points)
    by_design = {}
    for p in result.points:
        key = tuple(sorted((k, v) for k, v in p.params.items() if k != "weight_bits"))
        by_design.setdefault(key, {})[p.params["weight_bits"]] = p
    assert all(pair[4].latency_ms <= pair[8].latency_ms and pair[4].energy_mj < pair[8].energy_mj
               for pair in by_design.values())


def test_the_front_of_the_jobs_fronts_is_the_front_of_every_admitted_point(roberta) -> None:
    space = replace(SMALL, rows=(8, 16, 32), bandwidth_gbs=(8.5, 25.6, 100))
    limits = Constraints(max_area_mm2=sorted(p.area_mm2 for p in explore(roberta, space).points)[
        space.size // 2])
    result = explore(roberta, space, constraints=limits)
    assert len(result.front) > 1 and len(result.points) < result.evaluated
    assert [p.to_dict() for p in result.front] == [p.to_dict()
                                                   for p in pareto_front(result.points)]


def test_infeasible_constraint_names_the_smallest_value_that_works(roberta) -> None:
    result = explore(roberta, SMALL)
    fastest = min(p.latency_ms for p in result.points)
    with pytest.raises(UserInputError, match=rf"max_latency_ms=0.001.* is {fastest:.4g}"):
        explore(roberta, SMALL, constraints=Constraints(max_latency_ms=0.001))
    kept = explore(roberta, SMALL, constraints=Constraints(max_latency_ms=fastest))
    assert all(p.latency_ms <= fastest for p in kept.points)


def test_bad_spaces_are_refused(roberta) -> None:
    with pytest.raises(UserInputError, match="clock_mhz values must be positive"):
        replace(SMALL, clock_mhz=(0,))
    with pytest.raises(UserInputError, match="rows needs at least one value"):
        replace(SMALL, rows=())
    with pytest.raises(UserInputError, match="raise out_buffer_kib"):
        explore(roberta, replace(SMALL, out_buffer_kib=(0.125,)))


def test_cli_simulate_and_dse_write_their_records(tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "sim.json"
    done = runner.invoke(app, ["hw", "simulate", "--model", "roberta-base", "--arch",
                               "swifttron", "--seq-len", "32", "--out", str(out)])
    assert done.exit_code == 0, done.output
    record = json.loads(out.read_text())
    assert record["arch"] == "swifttron" and record["latency_ms"] > 0
    assert out.with_suffix(".png").is_file()
    folder = tmp_path / "dse"
    done = runner.invoke(app, ["hw", "dse", "--model", "roberta-base", "--seq-len", "32",
                               "--rows", "8,16", "--cols", "8", "--clock-mhz", "200",
                               "--workers", "1", "--out", str(folder)])
    assert done.exit_code == 0, done.output
    front = json.loads((folder / "front.json").read_text())
    assert front["front"] and (folder / "front.png").is_file()
    assert len(json.loads((folder / "points.json").read_text())) == front["evaluated"]


@pytest.mark.parametrize("args, message", [
    (["simulate", "--model", "roberta-base", "--arch", "tpu"], "'tpu' is not one of"),
    (["simulate", "--model", "roberta-base", "--clock-mhz", "0"], "clock_mhz must be positive"),
    (["simulate", "--model", "tiny-llama", "--arch", "swifttron"], "no unit on arch"),
    (["dse", "--model", "roberta-base", "--rows", "8,x"], "comma-separated"),
    (["dse", "--model", "roberta-base", "--workers", "0"], "--workers must be at least 1"),
    (["dse", "--model", "roberta-base", "--scheduler", "localhost:8786"], "tcp://HOST:PORT"),
    (["dse", "--model", "roberta-base", "--scheduler", "tcp://127.0.0.1:8786", "--workers", "2"],
     "drop --workers"),
])
def test_cli_bad_input_is_one_line(args, message, tmp_path) -> None:
    done = CliRunner().invoke(app, ["hw", *args, "--out", str(tmp_path / "o")])
    assert done.exit_code == 2 and message in done.output
    assert not (tmp_path / "o").exists()


def test_cli_dse_on_a_scheduler_nobody_runs_is_one_line(silent_scheduler, tmp_path) -> None:
    began = time.perf_counter()
    done = CliRunner().invoke(app, ["hw", "dse", "--model", "roberta-base", "--seq-len", "16",
                                    "--rows", "8", "--cols", "8", "--scheduler",
                                    silent_scheduler, "--out", str(tmp_path / "o")])
    assert done.exit_code == 2 and time.perf_counter() - began < 20
    assert f"no Dask scheduler answers at {silent_scheduler}" in done.output
    assert "dask scheduler" in done.output and "Traceback" not in done.output
    assert not (tmp_path / "o").exists()


def test_dse_takes_its_preset_by_the_same_flag_as_simulate(tmp_path) -> None:
    """One name per concept: `--arch` names the accelerator preset in `hw simulate` and `hw dse`."""
    args = ["hw", "dse", "--model", "roberta-base", "--seq-len", "16", "--rows", "8",
            "--cols", "8", "--workers", "1", "--out", str(tmp_path / "dse")]
    fronts = {}
    for arch in ("edge", "swifttron"):  # 45 nm and 65 nm tables: the same designs cost more
        done = CliRunner().invoke(app, [*args, "--arch", arch])
        assert done.exit_code == 0, done.output
        fronts[arch] = json.loads((tmp_path / "dse" / "front.json").read_text())["front"]
    assert fronts["edge"] != fronts["swifttron"]
    unknown = CliRunner().invoke(app, [*args, "--arch", "nope"])
    assert unknown.exit_code == 2


def test_dse_takes_fusion_by_the_same_flag_as_simulate(tmp_path) -> None:
    """`--fusion` means the same in `hw simulate` and `hw dse`: fused designs move fewer bytes."""
    args = ["hw", "dse", "--model", "roberta-base", "--seq-len", "256", "--rows", "8",
            "--cols", "8", "--workers", "1"]
    energy = {}
    for fusion in ("none", "all"):
        folder = tmp_path / fusion
        done = CliRunner().invoke(app, [*args, "--fusion", fusion, "--out", str(folder)])
        assert done.exit_code == 0, done.output
        energy[fusion] = min(p["energy_mj"] for p in
                             json.loads((folder / "front.json").read_text())["front"])
    assert energy["all"] < energy["none"]
    bad = CliRunner().invoke(app, [*args, "--fusion", "attn", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "use none, epilogue, all" in bad.output

"""The hw layer's sweeps on a loopback Dask cluster of two workers (`parallel.local_cluster`,
started once for the module: a start costs seconds) give what one worker in this process gives,
byte for byte: the exploration's points and front, the co-design pricing table with its NaNs,
`hw dse --scheduler` writing the files `--workers 1` writes, and a text model's co-design, its
sensitivity probes too on the workers, as one thread here gives it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
from typer.testing import CliRunner

from mfmaccel.cli import app
from mfmaccel.hw.codesign import codesign
from mfmaccel.hw.codesign_price import price_table
from mfmaccel.hw.codesign_run import subject_for_spec
from mfmaccel.hw.dse import DesignSpace, explore
from mfmaccel.hw.ops import Gemm
from mfmaccel.hw.trace import workload_for_spec
from mfmaccel.parallel import Executor, local_cluster

# 96 designs (more than SWEEP_JOBS, so jobs differ in size); an 8x8 array's output tile does not
# fit 0.125 KiB, so some designs are infeasible
SPACE = DesignSpace(rows=(8, 16), cols=(8, 16), a_buffer_kib=(32,), b_buffer_kib=(64, 256),
                    out_buffer_kib=(0.125, 16, 64), bandwidth_gbs=(8.5, 25.6),
                    clock_mhz=(200, 400), vector_lanes=(16,), weight_bits=(8,))
GRID = ["--model", "roberta-base", "--seq-len", "16", "--rows", "8,16", "--cols", "8,16",
        "--clock-mhz", "200,400"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Executor]:
    with local_cluster(2) as address:
        yield Executor(scheduler=address)


@pytest.fixture(scope="module")
def roberta():
    return workload_for_spec("roberta-base", 16)


def _json(points) -> str:
    return json.dumps([p.to_dict() for p in points])


def test_explore_on_two_workers_gives_the_same_bytes(cluster, roberta) -> None:
    here = explore(roberta, SPACE)
    there = explore(roberta, SPACE, executor=cluster)
    assert 0 < here.infeasible == there.infeasible and here.evaluated == there.evaluated
    assert _json(there.points) == _json(here.points)
    assert _json(there.front) == _json(here.front)


def test_the_pricing_table_on_two_workers_is_the_same(cluster, roberta) -> None:
    weights = [op.where for op in roberta.ops if isinstance(op, Gemm) and op.weight_bits]
    bits = [dict.fromkeys(weights, 8), dict.fromkeys(weights, 4),
            {where: 4 if i % 2 else 8 for i, where in enumerate(weights)}]
    here = price_table(roberta, bits, SPACE)
    there = price_table(roberta, bits, SPACE, executor=cluster)
    assert here.shape == (3, SPACE.size, 4) and np.isnan(here).any()
    assert np.array_equal(np.isnan(here), np.isnan(there))
    assert np.array_equal(here, there, equal_nan=True)


def test_cli_dse_on_a_scheduler_writes_what_one_worker_writes(cluster, tmp_path) -> None:
    runner = CliRunner()
    for name, where in (("here", ["--workers", "1"]), ("there", ["--scheduler",
                                                                 cluster.scheduler])):
        done = runner.invoke(app, ["hw", "dse", *GRID, *where, "--out", str(tmp_path / name)])
        assert done.exit_code == 0, done.output
    assert (tmp_path / "here" / "points.json").read_bytes() == \
        (tmp_path / "there" / "points.json").read_bytes()
    fronts = [json.loads((tmp_path / name / "front.json").read_text()) for name in
              ("here", "there")]
    assert fronts[0]["front"] == fronts[1]["front"] and fronts[0]["front"]


def test_a_text_models_codesign_probes_and_prices_on_the_workers(cluster, one_thread) -> None:
    subject = subject_for_spec("tiny-llama", seq_len=1, calib_tokens=128, tokens=128)
    assert subject.source is not None and subject.source.model.spec == "tiny-llama"
    with one_thread():  # the checks run here: on one thread, as the workers compute
        records = [codesign(subject, SPACE, bits=(4, 8), steps=3, executor=executor).to_dict()
                   for executor in (Executor(), cluster)]
    for record in records:
        record.pop("seconds")
    assert records[0] == records[1]

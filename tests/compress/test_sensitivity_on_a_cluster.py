"""Sensitivity probes on a loopback Dask cluster of two workers (`parallel.local_cluster`,
started once for the module), each loading the model by name and capturing the block inputs
once: the same three tiers, value for value, as one single-thread worker; this process at its
own thread count agrees to fp32 rounding (docs/sweeps.md); `quantize --scheduler` writes the
model and record that `--workers 1` writes on one thread."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from mfmaccel.cli import app
from mfmaccel.compress.calibration import calibration_batches
from mfmaccel.compress.probe_jobs import ProbeSource
from mfmaccel.compress.sensitivity import Sensitivity, measure_sensitivity
from mfmaccel.errors import UserInputError
from mfmaccel.models.source import ModelSource
from mfmaccel.parallel import Executor, local_cluster
from mfmaccel.runtime.grid import QuantSpec

SPECS = [QuantSpec(3, 32), QuantSpec(8, 32)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Executor]:
    with local_cluster(2) as address:
        yield Executor(scheduler=address)


def _tiers(sensitivity: Sensitivity) -> tuple:
    return sensitivity.signal, sensitivity.network, sensitivity.blocks, sensitivity.modules


def test_probes_on_two_workers_are_one_workers(cluster, tiny_llama, one_thread) -> None:
    batches = calibration_batches(tiny_llama.tokenizer, 256,
                                  positions=tiny_llama.context_length)
    seen: list[int] = []
    there = measure_sensitivity(tiny_llama.module, batches, SPECS, executor=cluster,
                                source=ProbeSource(ModelSource("tiny-llama")),
                                progress=lambda done, total: seen.append(done))
    with one_thread():
        worker_like = measure_sensitivity(tiny_llama.module, batches, SPECS)
    here = measure_sensitivity(tiny_llama.module, batches, SPECS)
    assert _tiers(there) == _tiers(worker_like)
    assert seen == list(range(1, len(seen) + 1)) and len(seen) > len(SPECS)
    for label, kl in there.network.items():
        assert kl == pytest.approx(here.network[label], rel=1e-4)
    with pytest.raises(UserInputError, match="held only in this process"):
        measure_sensitivity(tiny_llama.module, batches, SPECS, executor=cluster)


def test_cli_quantize_on_a_scheduler_writes_what_one_worker_writes(cluster, tmp_path,
                                                                   one_thread) -> None:
    args = ["quantize", "--model", "tiny-llama", "--avg-bits", "5", "--specs",
            "int3-g32,int8-g32", "--method", "rtn", "--calib-tokens", "256"]
    records = {}
    for name, where in (("here", ["--workers", "1"]), ("there", ["--scheduler",
                                                                 cluster.scheduler])):
        with one_thread():
            done = CliRunner().invoke(app, [*args, *where, "--out", str(tmp_path / name)])
        assert done.exit_code == 0, done.output
        record = json.loads((tmp_path / name / "compression.json").read_text())
        record.pop("seconds"), record["sensitivity"].pop("seconds")
        records[name] = record
    assert records["here"] == records["there"]
    assert (tmp_path / "here" / "model.safetensors").read_bytes() == \
        (tmp_path / "there" / "model.safetensors").read_bytes()

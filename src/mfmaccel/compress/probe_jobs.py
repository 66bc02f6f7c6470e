"""A sensitivity's probes as jobs for worker processes (`mfmaccel.parallel`).

Each job names the model (`models.source.ModelSource`), the calibration batches and one
`Probe`. A worker builds a `Prober` for the first job of a measurement (loads the model,
captures the block inputs) and keeps it for the later ones, so the capture is paid once per
worker, not once per probe. Every worker computes from the same weights and batches on one
thread, so a probe's value does not depend on which worker ran it.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mfmaccel.compress.prober import Probe, Prober, run_probe
from mfmaccel.models.record import LoadedModel
from mfmaccel.models.source import ModelSource, check_picklable, loaded


def whole_module(model: LoadedModel) -> nn.Module:
    """The module a sensitivity probes, by default: the model's own."""
    return model.module


@dataclass(frozen=True)
class ProbeSource:
    """How a worker gets the module to probe: the model `model` names, through `owner` (a
    module-level function of the loaded model, e.g. a co-design's view of a vision tower)."""

    model: ModelSource
    owner: Callable[[LoadedModel], nn.Module] = whole_module

    def __post_init__(self) -> None:
        check_picklable(self.owner, "the probed module's owner")


@dataclass(frozen=True, eq=False)
class ProbeJob:
    source: ProbeSource
    batches: tuple[torch.Tensor, ...]
    key: str  # source and batches digested: which kept Prober a worker may reuse
    probe: Probe


def probe_jobs(source: ProbeSource, batches: Sequence[torch.Tensor],
               probes: Sequence[Probe]) -> list[ProbeJob]:
    """One job per probe, all naming the same source and batches."""
    digest = hashlib.sha256(pickle.dumps(source))
    for batch in batches:
        digest.update(f"{batch.dtype}{tuple(batch.shape)}".encode())
        digest.update(batch.detach().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return [ProbeJob(source, tuple(batches), digest.hexdigest(), probe) for probe in probes]


def probe_on_worker(job: ProbeJob) -> float:
    """A worker's job: the probe on this process's Prober for the job's model and batches."""
    return run_probe(_prober(job), job.probe)


_held: list[tuple[str, Prober]] = []  # this process's one kept Prober


def _prober(job: ProbeJob) -> Prober:
    if _held and _held[0][0] == job.key:
        return _held[0][1]
    _held.clear()
    prober = Prober(job.source.owner(loaded(job.source.model)), job.batches)
    _held.append((job.key, prober))
    return prober

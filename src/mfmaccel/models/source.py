"""A model named by what `load_model` takes, so that another process can load the same one: a
sweep's worker processes (`mfmaccel.parallel`) get this record, never the weights.

Why a record and a cache: a job that carried a model would send its weights with every job,
and one that loaded it would load it again for every job. Each worker process instead loads
the model its first job names and keeps it for the jobs after (`loaded`); one model at a time,
so a worker's memory holds one copy whatever it ran before.

A model held only in memory (changed after loading and never saved) has no such name: it can
be measured only in the process holding it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mfmaccel.errors import UserInputError
from mfmaccel.models.loader import known_model_names, load_model
from mfmaccel.models.record import LoadedModel


@dataclass(frozen=True)
class ModelSource:
    """`load_model(spec, seed=seed)`, then `adapt` applied to it (e.g. the execution knobs of
    `mfmaccel eval --knobs`). `adapt` must be picklable and give the same model every time: a
    module-level function, or a record with `__call__` (`execute.settings.Adaptation`)."""

    spec: str
    seed: int = 0
    adapt: Callable[[LoadedModel], LoadedModel] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec", portable_spec(self.spec))
        if self.adapt is not None:
            check_picklable(self.adapt, "the model's adaptation")


def portable_spec(spec: str) -> str:
    """A folder or file that exists here as an absolute path (a worker may run in another
    folder; across machines the same path must exist there); a name as it is."""
    if spec in known_model_names() or spec.startswith("tiny-"):
        return spec  # `load_model` reads a name first, whatever folder shares it
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def check_picklable(value: object, what: str) -> None:
    """Refuse, in one line, what cannot travel to a worker process."""
    try:
        pickle.dumps(value)
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise UserInputError(f"{what} ({type(value).__name__}) cannot go to worker processes "
                             f"({error}); give a module-level function or a record, or run "
                             "with --workers 1") from None


_held: list[tuple[ModelSource, LoadedModel]] = []  # this process's one cached model


def loaded(source: ModelSource) -> LoadedModel:
    """The model `source` names, loaded on this process's first call for it and kept; a call
    for another source replaces it."""
    if _held and _held[0][0] == source:
        return _held[0][1]
    _held.clear()  # the old model goes before the new one loads
    model = load_model(source.spec, seed=source.seed)
    model = source.adapt(model) if source.adapt is not None else model
    _held.append((source, model))
    return model

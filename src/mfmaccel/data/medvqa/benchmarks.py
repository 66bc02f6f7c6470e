"""The built-in closed-question benchmarks by name: every caller that picks medvqa or medvqa2
(the one a model was adapted on, or the one a user names) loads it here, so a name means the
same questions everywhere."""

from __future__ import annotations

from mfmaccel.data.medvqa.build import load_medvqa
from mfmaccel.data.medvqa.realbuild import load_medvqa2
from mfmaccel.data.medvqa.sample import VQASample
from mfmaccel.errors import UserInputError

LOADERS = {"medvqa": load_medvqa, "medvqa2": load_medvqa2}


def load_benchmark(name: str, split: str, *, seed: int = 0,
                   limit: int | None = None) -> list[VQASample]:
    """The first `limit` questions of `split` of the built-in benchmark `name`, in its seeded
    shuffle (only their images are made)."""
    if name not in LOADERS:
        raise UserInputError(f"unknown VQA benchmark '{name}'; choose one of: "
                             f"{', '.join(LOADERS)}")
    return LOADERS[name](split, seed=seed, limit=limit)

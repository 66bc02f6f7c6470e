"""A model named for worker processes (`models.source`): loaded once per process and kept, one
at a time; paths made absolute, names kept; what cannot be pickled refused in one line."""

from __future__ import annotations

import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.execute.settings import Adaptation
from mfmaccel.models import source
from mfmaccel.models.source import ModelSource, loaded, portable_spec


def test_a_process_keeps_one_model_for_the_jobs_that_name_it() -> None:
    first = loaded(ModelSource("tiny-llama", seed=1))
    assert loaded(ModelSource("tiny-llama", seed=1)) is first
    other = loaded(ModelSource("tiny-llama", seed=2))
    assert other is not first and len(source._held) == 1
    fused = loaded(ModelSource("tiny-llama", seed=2, adapt=Adaptation(fuse=True)))
    assert fused is not other


def test_paths_become_absolute_and_names_stay(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "tiny-llama").mkdir()  # a folder named like a built-in: the name still wins
    assert portable_spec("folder") == str(tmp_path / "folder")
    assert ModelSource("folder").spec == str(tmp_path / "folder")
    assert portable_spec("tiny-llama") == "tiny-llama"
    assert portable_spec("smollm2-135m") == "smollm2-135m"
    assert portable_spec("no/such.gguf") == "no/such.gguf"  # load_model says it is missing


def test_an_adaptation_that_cannot_be_pickled_is_one_line() -> None:
    with pytest.raises(UserInputError, match="^[^\n]*--workers 1$"):
        ModelSource("tiny-llama", adapt=lambda model: model)

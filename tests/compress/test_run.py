"""`compress.run`: a model named by spec quantized or pruned into a new folder, with its record
beside it; a bad combination of settings or a user's folder refused before the model loads."""

from __future__ import annotations

import json

import pytest

from mfmaccel.compress import run as compress_run
from mfmaccel.compress.run import prune_to_folder, quantize_to_folder
from mfmaccel.errors import UserInputError
from mfmaccel.models import load_model


def test_uniform_quantization_saves_a_loadable_packed_model(tmp_path, step_recorder) -> None:
    labels, progress = step_recorder
    logged: list[str] = []
    out = tmp_path / "q"
    record = quantize_to_folder("tiny-llama", out, uniform="int8-c", method="rtn",
                                calib_tokens=256, log=logged.append, progress=progress)
    assert record is None and not (out / "compression.json").exists()
    assert labels == ["rtn int8-c"] and logged[0].startswith("quantizing every part to int8-c")
    assert load_model(str(out)).module is not None


def test_a_budget_search_writes_its_record(tmp_path, step_recorder) -> None:
    labels, progress = step_recorder
    out = tmp_path / "q"
    record = quantize_to_folder("tiny-llama", out, avg_bits=10, specs=["int4-g16", "int8-c"],
                                method="rtn", calib_tokens=256, log=lambda m: None,
                                progress=progress)
    assert labels == ["sensitivity", "rtn"]
    assert json.loads((out / "compression.json").read_text())["bytes"] == record.bytes


@pytest.mark.parametrize(("settings", "message"), [
    ({"uniform": "int4-g16", "avg_bits": 4}, "takes no budget"),
    ({"avg_bits": 4, "activations": "token"}, "need --uniform"),
    ({"avg_bits": 4, "smoothing": 0.5}, "need --uniform"),
    ({}, "exactly one budget"),
])
def test_bad_settings_are_refused_before_the_model_loads(tmp_path, monkeypatch, settings,
                                                         message) -> None:
    monkeypatch.setattr(compress_run, "load_model", lambda spec: pytest.fail("loaded"))
    with pytest.raises(UserInputError, match=message):
        quantize_to_folder("tiny-llama", tmp_path / "q", **settings)
    assert not (tmp_path / "q").exists()


def test_a_users_folder_is_refused_before_the_model_loads(tmp_path, monkeypatch) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine\n")
    monkeypatch.setattr(compress_run, "load_model", lambda spec: pytest.fail("loaded"))
    for compress in (lambda: quantize_to_folder("tiny-llama", mine, uniform="int8-c"),
                     lambda: prune_to_folder("tiny-llama", mine, blocks=1)):
        with pytest.raises(UserInputError):
            compress()
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_pruning_saves_the_smaller_model_and_its_report(tmp_path, step_recorder) -> None:
    labels, progress = step_recorder
    out = tmp_path / "p"
    report = prune_to_folder("tiny-llama", out, blocks=1, calib_tokens=256, progress=progress)
    assert labels == ["pruning"]  # no recovery step without recover_steps
    assert json.loads((out / "pruning.json").read_text())["removed_blocks"] == \
        report.removed_blocks
    assert load_model(str(out)).module.config.num_hidden_layers == 1

"""`mfmaccel spiking` end to end on tiny BERT, and its answers to bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mfmaccel.cli import app

runner = CliRunner()


def test_spiking_writes_its_record(tmp_path):
    out = tmp_path / "spiking.json"
    result = runner.invoke(app, ["spiking", "--model", "tiny-bert", "--levels", "8",
                                 "--sentences", "2", "--calibration", "4", "--steps", "4,300",
                                 "--max-steps", "300", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["bit_exact"] is True and record["settled"] == record["batches"] == 1
    assert set(record["cosine_at"]) == {"4", "300"}


def test_b_bit_unit_spikes_record_their_window(tmp_path):
    out = tmp_path / "spiking.json"
    result = runner.invoke(app, ["spiking", "--model", "tiny-bert", "--levels", "1",
                                 "--activation-bits", "4", "--sentences", "2",
                                 "--calibration", "4", "--steps", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["activation_bits"] == 4 and record["window"] == 15
    assert record["bit_exact"] is True and len(record["exact_at_window"]) == 1


def test_mixed_weight_bits_meet_their_average_and_settle_bit_exact(tmp_path):
    out = tmp_path / "spiking.json"
    result = runner.invoke(app, ["spiking", "--model", "tiny-bert", "--avg-bits", "5",
                                 "--sentences", "2", "--calibration", "4", "--steps", "4",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    memory = record["memory"]
    assert record["avg_bits"] == 5 and len(set(record["weight_bits"].values())) > 1
    assert 4.5 < memory["average_bits"] <= 5
    assert memory["cut"] == pytest.approx(1 - memory["average_bits"] / 16)
    assert record["bit_exact"] is True  # the mixed program settles to itself as well


@pytest.mark.parametrize(("args", "message"), [
    (["--steps", "8,x"], "give step counts separated by commas"),
    (["--steps", "0,8"], "every step count must be at least 1"),
    (["--levels", "-2"], "--levels must be at least 1"),
    (["--max-steps", "0"], "--max-steps must be at least 1"),
    (["--model", "tiny-llama"], "tiny-llama is neither an encoder nor a VLM"),
    (["--model", "no-such-model"], "no-such-model"),
    (["--activation-bits", "9"], "choose 2 to 8"),
    (["--arch", "huge"], "huge"),
    (["--avg-bits", "2"], "--avg-bits 2 is below the"),
    (["--avg-bits", "16"], "--avg-bits 16: give the average weight bits"),
    (["--activation-bits", "8", "--levels", "1", "--max-steps", "100"],
     "below the 255 steps a neuron needs"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    options = {"--model": "tiny-bert", "--out": str(tmp_path / "s.json")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        options[flag] = value
    result = runner.invoke(app, ["spiking", *[x for kv in options.items() for x in kv]])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "s.json").exists()


def test_a_file_it_did_not_write_is_never_replaced(tmp_path):
    mine = tmp_path / "notes.json"
    mine.write_text("my notes")
    result = runner.invoke(app, ["spiking", "--model", "tiny-bert", "--out", str(mine)])
    assert result.exit_code == 2 and mine.read_text() == "my notes"

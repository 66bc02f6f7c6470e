"""Hostile outputs: an `--out` or a recipe name that points at someone else's files deletes
nothing; what mfmaccel wrote itself may be replaced."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mfmaccel.cli import app
from mfmaccel.fileio import OUTPUT_MARKER

runner = CliRunner()
PRUNE = ["prune", "--model", "tiny-llama", "--blocks", "1", "--calib-tokens", "64"]
QUANTIZE = ["quantize", "--model", "tiny-llama", "--uniform", "int8-c", "--method", "rtn",
            "--calib-tokens", "64"]
RTL = ["hw", "rtl", "--rows", "2", "--cols", "2"]


def run(*args: str):
    return runner.invoke(app, list(args))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: equal snapshots mean nothing was touched."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def user_files(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thesis.tex").write_text("years of work")
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "scan.png").write_bytes(b"\x89PNG not really")
    return folder


def refused(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "nothing was deleted" in result.output
    for word in words:
        assert word in result.output


def test_prune_out_dot_in_a_folder_of_user_files_deletes_nothing(tmp_path, monkeypatch):
    work = user_files(tmp_path / "work")
    before = snapshot(tmp_path)
    monkeypatch.chdir(work)
    refused(run(*PRUNE, "--out", "."), "working directory")
    refused(run(*PRUNE, "--out", ".."), "working directory")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", [PRUNE, QUANTIZE, RTL], ids=["prune", "quantize", "rtl"])
def test_out_on_an_existing_user_folder_is_refused(tmp_path, command):
    mine = user_files(tmp_path / "mine")
    before = snapshot(tmp_path)
    refused(run(*command, "--out", str(mine)), "mfmaccel did not write")
    assert snapshot(tmp_path) == before  # no temporary folder left beside it either


@pytest.mark.parametrize("command", [PRUNE, RTL], ids=["prune", "rtl"])
def test_out_on_an_earlier_mfmaccel_output_is_replaced(tmp_path, command):
    out = tmp_path / "out"
    assert run(*command, "--out", str(out)).exit_code == 0
    (out / "stale.txt").write_text("from the first run")
    result = run(*command, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert (out / OUTPUT_MARKER).is_file() and not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_out_on_a_file_is_refused(tmp_path):
    file = tmp_path / "notes.txt"
    file.write_text("keep")
    refused(run(*RTL, "--out", str(file)), "is a file")
    assert file.read_text() == "keep"


def recipe_file(folder: Path, name: str) -> Path:
    path = folder / f"recipe-{len(list(folder.glob('recipe-*')))}.yaml"
    path.write_text(f"name: '{name}'\nmodel: tiny-llama\nevaluation: {{tasks: [ppl], "
                    "ppl_tokens: 64, speed: false}\nstages: []\n")
    return path


@pytest.mark.parametrize("name", [".", "..", ".hidden", "a/b", "../../etc", ""])
def test_recipe_names_that_are_not_plain_are_refused_with_nothing_deleted(tmp_path, name):
    runs = user_files(tmp_path / "runs")
    user_files(runs / "sub")
    recipe = recipe_file(tmp_path, name)
    before = snapshot(tmp_path)
    for flags in ([], ["--fresh"], ["--resume"]):
        result = run("run", str(recipe), "--runs-dir", str(runs / "sub"), *flags)
        assert result.exit_code == 2, result.output
        assert "not a plain name" in result.output and "Traceback" not in result.output
    assert snapshot(tmp_path) == before


def test_fresh_on_a_folder_that_is_not_a_run_is_refused(tmp_path):
    runs = tmp_path / "runs"
    user_files(runs / "mine")
    recipe = recipe_file(tmp_path, "mine")
    before = snapshot(tmp_path)
    for flags in (["--fresh"], ["--resume"], []):
        refused(run("run", str(recipe), "--runs-dir", str(runs), *flags), "not an mfmaccel run")
    assert snapshot(tmp_path) == before


def test_runs_dir_that_makes_the_run_folder_the_working_directory_is_refused(tmp_path,
                                                                             monkeypatch):
    work = user_files(tmp_path / "work")
    monkeypatch.chdir(work)
    recipe = recipe_file(tmp_path, "work")
    before = snapshot(tmp_path)
    refused(run("run", str(recipe), "--runs-dir", "..", "--fresh"), "working directory")
    assert snapshot(tmp_path) == before


def test_fresh_replaces_an_earlier_run(tmp_path):
    runs = tmp_path / "runs"
    recipe = recipe_file(tmp_path, "again")
    assert run("run", str(recipe), "--runs-dir", str(runs)).exit_code == 0
    (runs / "again" / "stale.txt").write_text("from the first run")
    result = run("run", str(recipe), "--runs-dir", str(runs), "--fresh")
    assert result.exit_code == 0, result.output
    assert not (runs / "again" / "stale.txt").exists()
    assert (runs / "again" / "metrics.json").is_file()


def test_finetune_out_on_a_user_folder_is_refused_before_training(tmp_path):
    mine = user_files(tmp_path / "mine")
    before = snapshot(tmp_path)
    refused(run("finetune", "--out", str(mine)), "mfmaccel did not write")
    assert snapshot(tmp_path) == before


def test_finetune_never_writes_the_shipped_weights_by_default():
    import inspect

    from mfmaccel.cli.finetune import finetune
    from mfmaccel.finetune.main import DEFAULT_OUT

    default = inspect.signature(finetune).parameters["out"].default
    assert default == DEFAULT_OUT
    assert not default.is_absolute() and default.parts[0] != "weights"


def test_eval_out_never_overwrites_a_file_that_is_not_a_record(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    result = CliRunner().invoke(app, ["eval", "--model", "tiny-llama", "--task", "ppl",
                                      "--max-tokens", "64", "--context", "32",
                                      "--out", str(notes)])
    assert result.exit_code == 2 and "not an mfmaccel record" in result.output
    assert notes.read_text() == "my notes\n"
    record = tmp_path / "ppl.json"
    for _ in range(2):  # an earlier record is replaced
        again = CliRunner().invoke(app, ["eval", "--model", "tiny-llama", "--task", "ppl",
                                         "--max-tokens", "64", "--context", "32",
                                         "--out", str(record)])
        assert again.exit_code == 0, again.output


def test_a_users_file_as_out_is_refused_before_any_evaluation(tmp_path, monkeypatch):
    import mfmaccel.evaluate.run as evaluate_run

    def never(*args, **kwargs):
        raise AssertionError("evaluated before refusing --out")

    monkeypatch.setattr(evaluate_run, "run_evaluation", never)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    result = CliRunner().invoke(app, ["eval", "--model", "tiny-llama", "--task", "ppl",
                                      "--out", str(notes)])
    assert result.exit_code == 2 and "not an mfmaccel record" in result.output
    assert notes.read_text() == "my notes\n"

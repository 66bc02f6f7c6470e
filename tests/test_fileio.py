"""`atomic_directory` replaces only what mfmaccel wrote, and never leaves neither old nor new."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mfmaccel import fileio
from mfmaccel.errors import UserInputError
from mfmaccel.fileio import OUTPUT_MARKER, atomic_directory, is_mfmaccel_output


def write(folder: Path, text: str) -> Path:
    with atomic_directory(folder) as tmp:
        (tmp / "data.txt").write_text(text)
    return folder


def leftovers(parent: Path) -> list[str]:
    """Hidden temporary folders an interrupted or refused write would leave beside the target."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_a_new_folder_carries_the_marker_naming_its_writer(tmp_path):
    out = write(tmp_path / "out", "one")
    assert (out / "data.txt").read_text() == "one"
    marker = json.loads((out / OUTPUT_MARKER).read_text())
    assert marker["written_by"] == "mfmaccel"
    assert marker["writer"].endswith("test_fileio.write")
    assert is_mfmaccel_output(out) and leftovers(tmp_path) == []


def test_an_earlier_output_or_an_empty_folder_is_replaced(tmp_path):
    out = write(tmp_path / "out", "one")
    (out / "stale.txt").write_text("from the first write")
    write(out, "two")
    assert (out / "data.txt").read_text() == "two" and not (out / "stale.txt").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (write(empty, "three") / "data.txt").read_text() == "three"
    assert leftovers(tmp_path) == []


def test_a_user_folder_or_file_is_refused_before_anything_is_written(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(UserInputError, match="mfmaccel did not write.*nothing was deleted"):
        write(mine, "x")
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    file = tmp_path / "notes.txt"
    file.write_text("keep")
    with pytest.raises(UserInputError, match="is a file"):
        write(file, "x")
    assert file.read_text() == "keep" and leftovers(tmp_path) == []


def test_the_working_directory_its_ancestors_and_home_are_refused(tmp_path, monkeypatch):
    work = tmp_path / "project" / "work"
    work.mkdir(parents=True)
    (work / "keep.txt").write_text("keep")
    monkeypatch.chdir(work)
    # even when marked: these folders are never replaced
    fileio.mark_output(work, "test")
    fileio.mark_output(tmp_path / "project", "test")
    for target in (".", "..", "sub/..", str(work), str(tmp_path / "project"), "/"):
        with pytest.raises(UserInputError, match="working directory|filesystem root"):
            write(Path(target), "x")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    with pytest.raises(UserInputError, match="home folder"):
        write(tmp_path / "home", "x")
    assert (work / "keep.txt").read_text() == "keep"
    assert leftovers(work) == [OUTPUT_MARKER]


def test_a_link_is_refused(tmp_path):
    target = write(tmp_path / "out", "one")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(UserInputError, match="is a link"):
        write(link, "two")
    assert (target / "data.txt").read_text() == "one"


def test_a_failed_write_leaves_the_old_folder_untouched(tmp_path):
    out = write(tmp_path / "out", "one")
    with pytest.raises(RuntimeError), atomic_directory(out) as tmp:
        (tmp / "data.txt").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (out / "data.txt").read_text() == "one"
    assert leftovers(tmp_path) == []


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    """The old folder is renamed aside, the new one renamed in, and only then the old removed:
    when the second rename fails, the first is undone."""
    out = write(tmp_path / "out", "one")
    real_replace, calls = os.replace, []

    def second_rename_fails(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:
            raise OSError("disk gone")
        return real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", second_rename_fails)
    with pytest.raises(OSError, match="disk gone"):
        write(out, "two")
    monkeypatch.setattr(fileio.os, "replace", real_replace)
    assert calls[0][0] == "out" and calls[1][1] == "out"  # aside first, then in
    assert (out / "data.txt").read_text() == "one"
    assert leftovers(tmp_path) == []


def test_a_model_cache_folder_from_before_the_marker_stays_replaceable(tmp_path):
    cached = tmp_path / "models" / "smollm2"
    cached.mkdir(parents=True)
    (cached / "mfmaccel-source.json").write_text("{}")
    assert (write(cached, "new") / "data.txt").read_text() == "new"


def test_a_file_in_the_way_of_the_parent_folder_is_one_line(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(UserInputError, match="a file is in the way"):
        write(tmp_path / "runs" / "r", "x")
    assert (tmp_path / "runs").read_text() == "not a folder"


def test_outputs_get_the_usual_permissions_not_private_temporary_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "UMASK", 0o022)  # the umask read at import
    out = write(tmp_path / "out", "one")
    record = fileio.atomic_write_json(tmp_path / "record.json", {"a": 1})
    assert out.stat().st_mode & 0o777 == 0o755
    assert record.stat().st_mode & 0o777 == 0o644

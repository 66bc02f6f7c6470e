"""Atomic writes, so an interrupted run never leaves a half-written file or folder behind.

A folder mfmaccel writes carries a small marker file (`.mfmaccel-output`, naming what wrote
it); an existing folder is replaced only when it is empty or carries that marker, so an
`--out` pointing at a user's own folder (or at the working directory) deletes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mfmaccel.errors import UserInputError

OUTPUT_MARKER = ".mfmaccel-output"
# the model cache's own marker, written before OUTPUT_MARKER existed: its folders stay replaceable
LEGACY_MARKERS = ("mfmaccel-source.json",)


def _read_umask() -> int:
    """The process's umask: reading it means setting it, so this runs once, at import, before
    any thread could create a file while it is briefly 0."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _read_umask()


def _usual_mode(path: Path, mode: int) -> None:
    """Give a temporary file or folder (created private: 0600, 0700) the mode an ordinary
    `open`/`mkdir` would have, so an output is as readable as any other file the user makes."""
    os.chmod(path, mode & ~UMASK)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside `path` for a writer that wants a path (the GGUF
    writer streams tensors); on success it is renamed into place, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _usual_mode(Path(tmp), 0o666)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, then rename it into place."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Text flavour of `atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def protected_folder(path: str | Path) -> str | None:
    """Why `path` must never be replaced or removed (None when it may be): the filesystem root,
    the home folder, the working directory and every folder above it."""
    target = Path(os.path.realpath(path))
    cwd = Path.cwd().resolve()
    if target == Path(target.anchor):
        return "is the filesystem root"
    if target == Path.home().resolve():
        return "is your home folder"
    if target == cwd:
        return "is the working directory"
    if target in cwd.parents:
        return "holds the working directory"
    return None


def is_mfmaccel_output(folder: str | Path) -> bool:
    """True for a folder carrying the marker an mfmaccel writer leaves in what it writes."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return False
    return any((folder / name).is_file() for name in (OUTPUT_MARKER, *LEGACY_MARKERS))


def mark_output(folder: str | Path, writer: str) -> Path:
    """Leave the marker in `folder`, naming `writer`, so mfmaccel may replace it later."""
    marker = Path(folder) / OUTPUT_MARKER
    marker.write_text(json.dumps({"written_by": "mfmaccel", "writer": writer}) + "\n")
    return marker


def check_replaceable(path: str | Path) -> None:
    """Refuse, before anything is written, a `path` that `atomic_directory` must not replace:
    a protected folder, a link, a file, or a non-empty folder mfmaccel did not write."""
    path = Path(path)
    reason = protected_folder(path)
    if reason is not None:
        raise UserInputError(f"{path} {reason}; write to a new folder instead (nothing was "
                             "deleted)")
    if path.is_symlink():
        raise UserInputError(f"{path} is a link; give a new folder path (nothing was deleted)")
    if not path.exists():
        return
    if not path.is_dir():
        raise UserInputError(f"{path} is a file, not an output folder; give a new folder path "
                             "(nothing was deleted)")
    if not is_mfmaccel_output(path) and any(path.iterdir()):
        raise UserInputError(f"{path} holds files mfmaccel did not write; give a new or empty "
                             "folder, or remove it yourself (nothing was deleted)")


def check_replaceable_file(path: str | Path, *, ours: Callable[[Path], bool] | None = None,
                           what: str = "an mfmaccel record (a JSON object)") -> None:
    """Refuse an output file `path` that holds what mfmaccel did not write: a folder, a link, or
    a file `ours` does not recognise (default: a JSON object, as every record mfmaccel writes
    is one); `what` names what mfmaccel writes there."""
    path = Path(path)
    if path.is_symlink() or path.is_dir():
        raise UserInputError(f"{path} is a {'link' if path.is_symlink() else 'folder'}, not a "
                             "file mfmaccel wrote; give a new file path (nothing was written)")
    if path.exists() and not (ours or _is_json_object)(path):
        raise UserInputError(f"{path} exists and is not {what}; give a new file path, or "
                             "remove it yourself (nothing was written)")


def check_parent_folder(path: str | Path) -> None:
    """Refuse an output path whose folder does not exist (outputs never create parents the
    user did not ask for)."""
    parent = Path(path).parent
    if not parent.is_dir():
        raise UserInputError(f"folder {parent} does not exist; create it or give another "
                             "--out (nothing was written)")


def _is_json_object(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_bytes()), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def _caller() -> str:
    """`module.function` of the code that asked for the folder, for the marker."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__") in (__name__,
                                                                           "contextlib"):
        frame = frame.f_back
    return f"{frame.f_globals.get('__name__', '?')}.{frame.f_code.co_name}"


def _swap_in(new: Path, path: Path) -> None:
    """Put `new` at `path`; an old folder there is renamed aside first and removed only once
    `new` is in place, so one of the two is always whole on disk."""
    check_replaceable(path)  # again: something may have appeared there meanwhile
    if not path.exists():
        os.replace(new, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.replace(path, old)
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path`.

    Refused with `UserInputError` before anything is written: the working directory or a folder
    above it, the home folder, `/`, a file, or a non-empty folder without the marker.
    """
    path = Path(os.path.abspath(path))
    check_replaceable(path)
    writer = _caller()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserInputError(f"cannot create {path}: a file is in the way of its folder "
                             f"{path.parent}; give another path (nothing was deleted)") from None
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    _usual_mode(tmp, 0o777)
    try:
        yield tmp
        mark_output(tmp, writer)
        _swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

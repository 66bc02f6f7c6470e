"""Reading a user's JSON-lines file (plain or gzip) with one clear error per bad line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from mfmaccel.errors import UserInputError


def read_jsonl(path: Path, what: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; `what` names the expected file."""
    if not path.is_file():
        raise UserInputError(f"{path} does not exist; pass the path of {what}")
    records = []
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserInputError(
                f"{path}:{number}: malformed JSON ({exc.msg}); fix or remove line {number}"
            ) from None
        if not isinstance(record, dict):
            raise UserInputError(f"{path}:{number}: expected a JSON object; fix line {number}")
        records.append((number, record))
    return records


def _read_lines(path: Path) -> list[str]:
    """All lines, gunzipped when the file starts with the gzip magic bytes (whatever its name)."""
    try:
        with path.open("rb") as handle:
            gzipped = handle.read(2) == b"\x1f\x8b"
        opener = gzip.open if gzipped else open
        with opener(path, "rt", encoding="utf-8") as handle:
            return handle.read().splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise UserInputError(
            f"cannot read {path} ({exc}); pass a UTF-8 .jsonl or .jsonl.gz file"
        ) from None

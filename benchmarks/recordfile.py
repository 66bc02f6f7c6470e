"""Naming and writing a benchmark's record: `<date>-<name>[-options]-at-<commit>.json` under
benchmarks/results/, so runs with different options never overwrite each other's record."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def commit() -> str:
    """The short commit the run measured (a record names it)."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent)
    return out.stdout.strip() or "unknown"


def record_path(parts: list[str], at: str) -> Path:
    return RESULTS / f"{datetime.date.today().isoformat()}-{'-'.join(parts)}-at-{at}.json"


def emit(report: dict, path: Path | None) -> None:
    """Print the report as JSON, and write it to `path` when one is given."""
    from mfmaccel.fileio import atomic_write_text  # here: a benchmark sets threads first

    text = json.dumps(report, indent=1)
    print(text)
    if path is not None:
        written = atomic_write_text(path, text + "\n")
        print(f"wrote {written}", file=sys.stderr)

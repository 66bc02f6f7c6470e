"""Small typed records that stages and evaluations hand to each other and serialise to JSON."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mfmaccel.fileio import atomic_write_json


@dataclasses.dataclass
class Record:
    """Base for result records: `to_dict()` for JSON, `save()` writes it atomically."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

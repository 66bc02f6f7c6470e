"""Small typed records that stages and evaluations hand to each other and serialise to JSON."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mfmaccel.fileio import atomic_write_json, check_replaceable_file


@dataclasses.dataclass
class Record:
    """Base for result records: `to_dict()` for JSON, `save()` writes it atomically."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path) -> Path:
        """Write the record as JSON; a path holding anything but an earlier record is refused."""
        check_replaceable_file(path)
        return atomic_write_json(path, self.to_dict())


@dataclasses.dataclass
class Metrics(Record):
    """What a model is worth at one point of a run: quality per task, size and speed."""

    quality: dict[str, float] = dataclasses.field(default_factory=dict)  # e.g. {"medvqa": 0.91}
    weight_bytes: int = 0
    params: int = 0
    prefill_seconds: float | None = None  # batch-1 prompt latency
    decode_tokens_per_s: float | None = None  # batch-1 greedy decode
    peak_rss_bytes: int | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)  # full task records


@dataclasses.dataclass
class StageResult(Record):
    """One stage of a run: the model before and after, and what the stage produced."""

    name: str  # the label in the recipe (unique within it)
    stage: str  # the registered stage it ran
    params: dict[str, Any]
    before: Metrics
    after: Metrics
    seconds: float = 0.0
    artifacts: list[str] = dataclasses.field(default_factory=list)  # paths inside the run dir
    notes: str = ""
    curves: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # e.g. loss curves
    missed_bar: str = ""  # why the stage's model was set aside (its max_drop); "" when kept

    @property
    def kept(self) -> bool:
        return not self.missed_bar

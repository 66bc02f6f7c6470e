"""The evaluation's named choices, as enums whose members are their strings (so comparisons,
JSON and messages read as before). They live apart from the modules that measure (`run`,
`vqa`), so the command line can offer them without loading torch."""

from __future__ import annotations

from enum import StrEnum


class Task(StrEnum):
    """What `run.run_evaluation` measures."""

    ppl = "ppl"
    humaneval = "humaneval"
    medvqa = "medvqa"
    medvqa2 = "medvqa2"
    speed = "speed"


class VqaMode(StrEnum):
    """How a VQA answer is found (`vqa`): rank the candidates, or generate and match."""

    rank = "rank"
    generate = "generate"

"""The decode layer's named choices, as enums whose members are their strings. They live apart
from the modules that decode, so the command line can offer them without loading torch."""

from __future__ import annotations

from enum import StrEnum


class CascadeTask(StrEnum):
    """What a cascade answers (`cascade_run`): HumanEval problems, self-tested on the prompt's
    examples, or closed VQA questions of either medical benchmark (medvlm-v1's `medvqa`, or
    `medvqa2` with real labels), trusted by their answer margin."""

    humaneval = "humaneval"
    medvqa = "medvqa"
    medvqa2 = "medvqa2"

"""The runtime's named choices, as enums whose members are their strings (so comparisons,
JSON and messages read as before). They live apart from the torch code that uses them
(`plan`, `activation`), so the command line can offer them without loading torch."""

from __future__ import annotations

from enum import StrEnum


class Method(StrEnum):
    """How a weight's integers are found (`plan.METHOD_NOTES` says each in words)."""

    rtn = "rtn"
    gptq = "gptq"


class ActivationMode(StrEnum):
    """Granularity of the int8 activation scales of W8A8 layers (`activation`)."""

    token = "token"
    tensor = "tensor"

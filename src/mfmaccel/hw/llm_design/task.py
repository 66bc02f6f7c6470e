"""A design task: what the LLM loop is asked to build and what checks its answer.

Why a record of its own: VerilogEval's problems and our own units (`hw.rtl`'s catalog, later)
reach the loop through one shape, so prompting, simulation, lint and synthesis never ask where a
task came from. The port list is read off the reference module's header, so a prompt or a
checker can name the interface without parsing Verilog again.
"""

from __future__ import annotations

import dataclasses
import re

from mfmaccel.records import Record

SOURCES = ("verilog-eval-v2", "mfmaccel")
DIRECTIONS = ("input", "output", "inout")
_TYPE_WORDS = {"wire", "reg", "logic", "var", "signed", "unsigned", "tri", "bit"}


@dataclasses.dataclass(frozen=True)
class Port:
    """One port of a module: `width` is None when its range is not a plain number (a
    parameter), then `range` keeps the text."""

    name: str
    direction: str
    width: int | None
    range: str = ""


@dataclasses.dataclass
class DesignTask(Record):
    """One problem: the prose spec (the prompt), the interface, the reference and its bench.

    `reference` defines the golden module under `reference_module` (VerilogEval: RefModule);
    `testbench` instantiates it beside the candidate's `TopModule` and reports its mismatches.
    """

    name: str
    spec: str
    ports: list[Port]
    reference: str
    testbench: str
    source: str
    reference_module: str = "RefModule"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown task source {self.source!r}; one of {', '.join(SOURCES)}")


def strip_comments(text: str) -> str:
    """Verilog text without // and /* */ comments (each replaced by a space)."""
    return re.sub(r"//[^\n]*|/\*.*?\*/", " ", text, flags=re.S)


def parse_ports(source: str, module: str) -> list[Port]:
    """The ports of `module`'s ANSI header in `source`, in order.

    A name without a direction of its own inherits the previous one's direction and range, as
    Verilog does (`input [7:0] a, b`). Raises ValueError when the module or its header is not
    found, or the header is not ANSI-style.
    """
    header = _header(strip_comments(source), module)
    ports: list[Port] = []
    direction, range_text = "", ""
    for piece in _split_top_level(header):
        words = re.sub(r"\[[^\]]*\]", " ", piece).split()
        if not words:
            continue
        if words[0] in DIRECTIONS:
            direction, range_text = words[0], "".join(_ranges(piece))
        elif not direction:
            raise ValueError(f"module {module}: port '{piece.strip()}' has no direction "
                             "(only ANSI-style headers are read)")
        name = _port_name(piece)
        ports.append(Port(name, direction, _width(range_text), range_text))
    if not ports:
        raise ValueError(f"module {module} has no ports")
    return ports


def _header(text: str, module: str) -> str:
    """The text between the parentheses of the module's port list (parameters skipped)."""
    found = re.search(rf"\bmodule\s+{re.escape(module)}\b", text)
    if found is None:
        raise ValueError(f"no 'module {module}' in the source")
    position = found.end()
    rest = text[position:].lstrip()
    if rest.startswith("#"):
        params_open = rest.index("(")
        rest = rest[_matching(rest, params_open) + 1 :].lstrip()
    if not rest.startswith("("):
        raise ValueError(f"module {module}: no port list after its name")
    return rest[1 : _matching(rest, 0)]


def _matching(text: str, opening: int) -> int:
    """Index of the parenthesis closing the one at `opening`."""
    depth = 0
    for index in range(opening, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return index
    raise ValueError("unbalanced parentheses in a module header")


def _split_top_level(header: str) -> list[str]:
    """Comma-separated pieces, commas inside brackets or braces not splitting."""
    pieces, depth, current = [], 0, []
    for char in header:
        depth += {"[": 1, "(": 1, "{": 1, "]": -1, ")": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return pieces


def _ranges(text: str) -> list[str]:
    return re.findall(r"\[[^\]]*\]", text)


def _port_name(piece: str) -> str:
    words = re.sub(r"\[[^\]]*\]", " ", piece).split()
    names = [w for w in words if w not in DIRECTIONS and w not in _TYPE_WORDS]
    if len(names) != 1 or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", names[0]):
        raise ValueError(f"cannot read a port name from '{piece.strip()}'")
    return names[0]


def _width(range_text: str) -> int | None:
    """Bits of the packed ranges, e.g. "[7:0]" -> 8, "" -> 1; None when not plain numbers."""
    width = 1
    for bounds in _ranges(range_text):
        numbers = re.fullmatch(r"\[\s*(\d+)\s*:\s*(\d+)\s*\]", bounds)
        if numbers is None:
            return None
        high, low = int(numbers.group(1)), int(numbers.group(2))
        width *= abs(high - low) + 1
    return width

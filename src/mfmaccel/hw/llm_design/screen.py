"""Refusing candidate Verilog before any tool reads it.

Why: a model's Verilog is untrusted code, and Icarus runs it. System tasks can read files
($fopen, $readmemh, `include), read plusargs or stdin, print (an imitation of the testbench's
pass line) or end the simulation early ($finish, $fatal) before the testbench reports; yosys
evaluates $readmem* at synthesis. A synthesizable design needs none of them, so anything but a
short list of pure functions ($signed, $clog2, $bits, ...) is refused, as is `include and any
string literal (a design needs none; refusing them also means comments are the only text our
scan must skip, where it and the compiler cannot disagree). A refusal is a recorded failure of
the candidate, "refused: uses $fopen", never an exception.
"""

from __future__ import annotations

import re

TOP = "TopModule"
# Pure functions of their arguments (or of declarations): a design may use them to size things.
ALLOWED_SYSTEM_FUNCTIONS = frozenset({
    "$signed", "$unsigned", "$clog2", "$bits", "$size", "$left", "$right", "$low", "$high",
    "$increment", "$dimensions", "$unpacked_dimensions", "$countones", "$countbits", "$onehot",
    "$onehot0", "$isunknown", "$ln", "$log10", "$exp", "$sqrt", "$pow", "$floor", "$ceil",
    "$rtoi", "$itor", "$realtobits", "$bitstoreal", "$shortrealtobits", "$bitstoshortreal",
})
_SYSTEM_NAME = re.compile(r"(?<![A-Za-z0-9_$])\$[A-Za-z0-9_$]*")
_COMMENT_OR_QUOTE = re.compile(r'//[^\n]*|/\*.*?(\*/|\Z)|"', re.S)


def screen(source: str) -> str:
    """"" when `source` may be compiled, else the refusal: "refused: uses $fopen", etc."""
    code, quoted = _code_without_comments(source)
    if re.search(r"`\s*include\b", code):
        return "refused: uses `include (reads a file)"
    for name in _SYSTEM_NAME.findall(code):
        if name not in ALLOWED_SYSTEM_FUNCTIONS:
            return f"refused: uses {name} (a synthesizable design needs no system task)"
    if quoted:
        return "refused: uses a string literal (a synthesizable design needs none)"
    if not re.search(rf"\bmodule\s+{TOP}\b", code):
        return f"no module {TOP} in the answer"
    return ""


def _code_without_comments(source: str) -> tuple[str, bool]:
    """(the text with comments blanked, whether a double quote appears outside comments).

    Scanning stops at the first quote outside a comment: before it, comment boundaries are the
    same for any reader; after it they would depend on string rules, and the text is refused.
    """
    pieces, position = [], 0
    for found in _COMMENT_OR_QUOTE.finditer(source):
        pieces.append(source[position : found.start()])
        if found.group(0) == '"':
            return "".join(pieces), True
        pieces.append(" ")
        position = found.end()
    pieces.append(source[position:])
    return "".join(pieces), False

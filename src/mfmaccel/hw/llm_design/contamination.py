"""How much of a passing design is the task's reference, token for token (contamination).

Why: VerilogEval's references are public, so a model may have seen them in training; a pass
that reproduces the reference's text says more about memory than about design skill. The
measure is the share of the candidate's distinct 8-token sequences (comments and whitespace
dropped, identifiers and numbers kept as written) that also occur in the reference, with the
reference's module renamed TopModule. The reference against itself scores 1.0; a design written
independently shares little beyond short idioms, because 8 tokens span more than one idiom
(`always @(posedge clk) begin` is 7).

`near_copy` marks an overlap of `NEAR_COPY` (0.8) or more on a candidate of at least
`MIN_NGRAMS` (20) distinct 8-grams. The floor is there because a one-line design (a NOT gate, a
wire) can only be written a few ways, so its overlap is high without any copying (three of the
0.5B model's seven passing designs score 1.0 with 9-18 8-grams). Above it, every module that
model wrote scored 0.52 at most, and references of neighbouring problems 0.14 at the 90th
percentile (docs/llm-design.md). It is information for the reader, not a defect of the
design, and does not enter `secure`.
"""

from __future__ import annotations

import re

from mfmaccel.hw.llm_design.bench import reference_as_candidate
from mfmaccel.hw.llm_design.task import DesignTask, strip_comments

NGRAM = 8
NEAR_COPY = 0.8
MIN_NGRAMS = 20
_TOKEN = re.compile(
    r"\d*\s*'[sS]?[bBoOdDhH]\s*[0-9a-fA-F_xXzZ?]+"  # a based literal: 8'hFF, 'b1
    r"|[A-Za-z_][A-Za-z0-9_$]*|\$[A-Za-z0-9_$]+|\\\S+"  # identifiers, $functions, escaped names
    r"|\d[\d_.]*"  # plain numbers
    r"|<<<|>>>|===|!==|<<=|>>=|==|!=|<=|>=|&&|\|\||<<|>>|~&|~\||~\^|\^~|\+:|-:|::|\*\*"
    r"|\S"  # any other single character
)


def tokens(source: str) -> list[str]:
    """The Verilog text as tokens: comments and whitespace dropped, literals kept whole (with
    the spaces inside a based literal removed)."""
    return [re.sub(r"\s+", "", token) for token in _TOKEN.findall(strip_comments(source))]


def ngrams(source: str, size: int = NGRAM) -> set[tuple[str, ...]]:
    """The distinct `size`-token sequences of the text (the whole text when shorter)."""
    words = tokens(source)
    if len(words) < size:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


def overlap(candidate: str, task: DesignTask) -> tuple[float, int]:
    """(share of the candidate's distinct 8-grams found in the reference, how many it has)."""
    mine = ngrams(candidate)
    if not mine:
        return 0.0, 0
    theirs = ngrams(reference_as_candidate(task))
    return len(mine & theirs) / len(mine), len(mine)


def near_copy(share: float, count: int) -> bool:
    """Whether an overlap says "this is the reference, reworded at most"."""
    return count >= MIN_NGRAMS and share >= NEAR_COPY

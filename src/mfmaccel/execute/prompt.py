"""The language model's prompt-length knob: fit a long prompt into `max_tokens` tokens.

Prefill cost grows with the prompt, so the co-optimiser may cap it. How to cut is the policy:

- "left": keep the end (what the model continues from), drop the start;
- "middle": keep the head (instructions, a function's signature) and the tail (the question,
  the end of a docstring), drop the middle; half the budget each;
- "examples": first drop whole worked examples, oldest (first in the prompt) first: doctest
  examples (a `>>>` line and its expected output, as in most HumanEval docstrings), one-line
  call examples (`f(x) == y`, `f(x) ➞ y`, as in the others), and few-shot VQA pairs
  (`Question: ...` + a non-empty `Answer: ...`); if the prompt still does not fit, cut its
  middle as "middle" does. Multi-line "Example 1: Input ... Output ..." blocks are not
  recognised and are cut as text.

Cuts fall only where a token starts a new character, so no token (nor a multi-byte character
split over tokens) is cut; the result is re-tokenized and cut tighter until it has at most
`max_tokens` tokens (special tokens such as a BOS are not counted). A prompt that fits is
returned unchanged.
"""

from __future__ import annotations

import re
from enum import StrEnum

from mfmaccel.errors import UserInputError


class TruncationPolicy(StrEnum):
    LEFT = "left"
    MIDDLE = "middle"
    EXAMPLES = "examples"


# the fewest tokens each policy can cut to: "middle" keeps at least one at each end
_SMALLEST = {TruncationPolicy.LEFT: 1, TruncationPolicy.MIDDLE: 2, TruncationPolicy.EXAMPLES: 2}

_NO_QUOTES = r"(?!.*(?:\"\"\"|'''))"  # a docstring's closing quotes are never part of one
DOCTEST_EXAMPLE = re.compile(
    rf"^{_NO_QUOTES}[ \t]*>>>.*(?:\n|\Z)(?:(?![ \t]*>>>){_NO_QUOTES}[ \t]*\S.*(?:\n|\Z))*",
    re.MULTILINE)
# one-line examples of HumanEval's other docstrings: "f(x) == y", "f(x) ➞ y", "f(x) # returns
# y", "For lst = [1] the output should be 1"
CALL_EXAMPLE = re.compile(
    rf"^{_NO_QUOTES}[ \t]*(?:\w+\(.*\)\s*(?:==>?|➞|->|=>|#\s*returns?|should (?:return|be))"
    r"|For .* the output should be)\s*\S.*(?:\n|\Z)", re.MULTILINE)
FEW_SHOT_PAIR = re.compile(r"^Question:.*\nAnswer:[ \t]*\S.*(?:\n|\Z)(?:[ \t]*\n)*", re.MULTILINE)


def fit_prompt(text: str, tokenizer, *, max_tokens: int, policy: str) -> str:
    """`text` cut to at most `max_tokens` tokens of `tokenizer` as `policy` says."""
    if policy not in tuple(TruncationPolicy):
        raise UserInputError(f"unknown prompt truncation policy '{policy}'; choose one of: "
                             f"{', '.join(TruncationPolicy)}")
    policy = TruncationPolicy(policy)
    if max_tokens < _SMALLEST[policy]:
        raise UserInputError(f"prompt max_tokens {max_tokens} is too small for policy "
                             f"'{policy}'; it needs at least {_SMALLEST[policy]}")
    if count_tokens(text, tokenizer) <= max_tokens:
        return text
    if policy == TruncationPolicy.EXAMPLES:
        text = drop_examples(text, tokenizer, max_tokens=max_tokens)
        if count_tokens(text, tokenizer) <= max_tokens:
            return text
    return _cut_to_fit(text, tokenizer, max_tokens=max_tokens,
                       keep_head=policy != TruncationPolicy.LEFT)


def count_tokens(text: str, tokenizer) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def example_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the worked examples in `text`, in order; where two
    patterns claim overlapping text (a `>>>` example's output line reading `f(x) == y`) the
    earlier span wins."""
    found = sorted(m.span() for pattern in (DOCTEST_EXAMPLE, CALL_EXAMPLE, FEW_SHOT_PAIR)
                   for m in pattern.finditer(text) if m.end() > m.start())
    spans: list[tuple[int, int]] = []
    for start, end in found:
        if not spans or start >= spans[-1][1]:
            spans.append((start, end))
    return spans


def drop_examples(text: str, tokenizer, *, max_tokens: int) -> str:
    """`text` without its first examples, as few as make it fit (all of them if none do)."""
    spans = example_spans(text)
    for dropped in range(1, len(spans) + 1):
        shorter = _without(text, spans[:dropped])
        if count_tokens(shorter, tokenizer) <= max_tokens:
            return shorter
    return _without(text, spans)


def _without(text: str, spans: list[tuple[int, int]]) -> str:
    pieces, position = [], 0
    for start, end in spans:
        pieces.append(text[position:start])
        position = end
    return "".join(pieces) + text[position:]


def _cut_to_fit(text: str, tokenizer, *, max_tokens: int, keep_head: bool) -> str:
    """Cut at token starts; re-tokenizing a cut text can merge differently, so tighten the
    budget by any excess until the result fits."""
    budget = max_tokens
    while budget >= (2 if keep_head else 1):
        cut = _cut_once(text, tokenizer, budget=budget, keep_head=keep_head)
        excess = count_tokens(cut, tokenizer) - max_tokens
        if excess <= 0:
            return cut
        budget -= excess
    raise UserInputError(f"prompt max_tokens {max_tokens} cannot hold this prompt's pieces; "
                         "raise max_tokens")


def _cut_once(text: str, tokenizer, *, budget: int, keep_head: bool) -> str:
    """The text of the first `budget // 2` (if `keep_head`) and the last remaining tokens, or
    fewer where a token boundary falls inside a character."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"]
    starts = [i for i in range(len(offsets)) if i == 0 or offsets[i - 1][1] <= offsets[i][0]]
    head = budget // 2 if keep_head else 0
    tail_from = next((offsets[i][0] for i in starts if i >= len(offsets) - (budget - head)),
                     len(text))
    head_to = max(i for i in starts if i <= head)
    head_text = text[: offsets[head_to][0]] if head_to > 0 else ""
    return head_text + text[tail_from:]

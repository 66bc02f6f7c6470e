"""The prompt-length knob on real HumanEval prompts with SmolLM2's tokenizer: within budget,
cut only at token starts, examples dropped whole and oldest first, bad budgets refused."""

from __future__ import annotations

import pytest

from mfmaccel.data.code import load_humaneval
from mfmaccel.errors import UserInputError
from mfmaccel.execute.prompt import count_tokens, example_spans, fit_prompt


@pytest.fixture(scope="module")
def tokenizer(smollm2):
    return smollm2.tokenizer


@pytest.fixture(scope="module")
def prompts() -> dict[str, str]:
    return {p.task_id: p.prompt for p in load_humaneval()}


def token_starts(text: str, tokenizer) -> set[int]:
    """Character positions where a token of `text` starts (and the text's ends)."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"]
    return {start for start, _ in offsets} | {0, len(text)}


def is_splice_at_token_starts(result: str, text: str, tokenizer) -> bool:
    """result == text[:a] + text[b:] for some token starts a <= b of `text`."""
    starts = token_starts(text, tokenizer)
    for b in starts:
        tail = text[b:]
        head = result[: len(result) - len(tail)]
        if result.endswith(tail) and text.startswith(head) and len(head) in starts \
                and len(head) <= b:
            return True
    return False


@pytest.mark.parametrize("policy", ["left", "middle", "examples"])
def test_every_humaneval_prompt_fits_and_is_cut_between_tokens(tokenizer, prompts, policy):
    for max_tokens in (16, 60):
        for text in prompts.values():
            result = fit_prompt(text, tokenizer, max_tokens=max_tokens, policy=policy)
            assert count_tokens(result, tokenizer) <= max_tokens
            if count_tokens(text, tokenizer) <= max_tokens:
                assert result == text
            elif policy == "left":
                assert text.endswith(result) and len(text) - len(result) in token_starts(
                    text, tokenizer)
            elif policy == "middle":
                assert is_splice_at_token_starts(result, text, tokenizer)


def test_left_keeps_the_end_and_middle_keeps_the_signature(tokenizer, prompts):
    text = prompts["HumanEval/0"]
    left = fit_prompt(text, tokenizer, max_tokens=40, policy="left")
    middle = fit_prompt(text, tokenizer, max_tokens=40, policy="middle")
    assert left.endswith('    True\n    """\n') and "def has_close_elements" not in left
    assert middle.startswith("from typing import List\n\n\ndef has_close_elements(")
    assert middle.endswith('    """\n')


def test_unicode_is_never_split(tokenizer):
    text = "Erklärung: 🤖🤖 naïve café — " * 12 + "Answer:"
    for max_tokens in range(5, 40, 3):
        for policy in ("left", "middle"):
            result = fit_prompt(text, tokenizer, max_tokens=max_tokens, policy=policy)
            assert "\ufffd" not in result
            assert is_splice_at_token_starts(result, text, tokenizer)


def test_doctest_examples_go_whole_and_oldest_first(tokenizer, prompts):
    text = prompts["HumanEval/36"]  # fizz_buzz, three `>>>` examples
    spans = example_spans(text)
    assert [text[a:b].split("\n")[0].strip() for a, b in spans] == [
        ">>> fizz_buzz(50)", ">>> fizz_buzz(78)", ">>> fizz_buzz(79)"]
    without_first = text[: spans[0][0]] + text[spans[0][1]:]
    budget = count_tokens(without_first, tokenizer)
    assert fit_prompt(text, tokenizer, max_tokens=budget, policy="examples") == without_first
    two_gone = fit_prompt(text, tokenizer, max_tokens=budget - 1, policy="examples")
    assert ">>> fizz_buzz(78)" not in two_gone and two_gone.endswith(
        '    >>> fizz_buzz(79)\n    3\n    """\n')


def test_one_line_call_examples_are_examples_too(prompts):
    text = prompts["HumanEval/72"]  # will_it_fly(...) ➞ True
    found = [text[a:b].strip() for a, b in example_spans(text)]
    assert found and all(line.startswith("will_it_fly(") and "➞" in line for line in found)


def test_few_shot_vqa_pairs_go_before_the_question(tokenizer):
    text = ("Answer with one word.\n"
            "Question: Is there a tumour?\nAnswer: yes\n\n"
            "Question: Which organ is shown?\nAnswer: brain\n\n"
            "Question: What modality is this?\nAnswer:")
    budget = count_tokens(text, tokenizer) - 3
    result = fit_prompt(text, tokenizer, max_tokens=budget, policy="examples")
    assert result == ("Answer with one word.\n"
                      "Question: Which organ is shown?\nAnswer: brain\n\n"
                      "Question: What modality is this?\nAnswer:")


def test_examples_policy_cuts_text_once_no_example_is_left(tokenizer, prompts):
    text = prompts["HumanEval/0"]
    result = fit_prompt(text, tokenizer, max_tokens=30, policy="examples")
    assert count_tokens(result, tokenizer) <= 30
    assert ">>>" not in result and result.startswith("from typing import List")


@pytest.mark.parametrize(("max_tokens", "policy", "named"), [
    (0, "left", "max_tokens"), (1, "middle", "at least 2"), (1, "examples", "at least 2"),
    (10, "right", "policy"),
])
def test_bad_settings_are_refused(tokenizer, max_tokens, policy, named):
    with pytest.raises(UserInputError, match=named):
        fit_prompt("a long enough prompt " * 10, tokenizer, max_tokens=max_tokens, policy=policy)

"""Perplexity: window bookkeeping and agreement with a direct computation."""

from __future__ import annotations

import math

import pytest
import torch

from mfmaccel.data.text import load_text_corpus, load_text_file
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.ppl import perplexity, window_spans
from mfmaccel.models import load_model


@pytest.mark.parametrize(
    ("n", "context", "stride"),
    [(10, 4, 4), (10, 4, 2), (3, 8, 8), (1000, 128, 37), (513, 512, 512)],
)
def test_every_token_but_the_first_is_scored_once(n: int, context: int, stride: int) -> None:
    scored = []
    for begin, end, n_scored in window_spans(n, context, stride):
        assert 0 < n_scored < end - begin + 1 and end - begin <= context
        assert n_scored <= end - begin - 1  # every scored token has left context in its window
        scored.extend(range(end - n_scored, end))
    assert scored == list(range(1, n))


def test_bad_windows_are_refused() -> None:
    with pytest.raises(UserInputError):
        window_spans(100, 16, 32)


def test_matches_direct_computation(tiny_llama) -> None:
    text = load_text_corpus("test")[:300]
    ids = tiny_llama.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.inference_mode():
        logits = tiny_llama.module(input_ids=ids).logits[0, :-1]
    expected = math.exp(float(torch.nn.functional.cross_entropy(logits, ids[0, 1:])))
    result = perplexity(tiny_llama, text, context=512)
    assert result.tokens == ids.shape[1] - 1
    assert result.perplexity == pytest.approx(expected, rel=1e-4)


def test_overlapping_windows_see_more_context(tiny_llama) -> None:
    text = load_text_corpus("test")[:2000]
    short = perplexity(tiny_llama, text, context=64, stride=64)
    overlapped = perplexity(tiny_llama, text, context=64, stride=16)
    assert short.tokens == overlapped.tokens
    assert short.perplexity != overlapped.perplexity


def test_context_beyond_model_window(tiny_llama) -> None:
    with pytest.raises(UserInputError, match="exceeds"):
        perplexity(tiny_llama, "some text " * 50, context=4096)


def test_encoder_is_refused() -> None:
    with pytest.raises(UserInputError, match="causal language model"):
        perplexity(load_model("tiny-bert"), "hello world")


def test_corpus_splits_are_disjoint_and_deterministic() -> None:
    train, test = load_text_corpus("train"), load_text_corpus("test")
    assert len(test) > 100_000 and len(train) > 300_000
    assert test[:2000] not in train
    assert load_text_corpus("test") == test
    with pytest.raises(UserInputError, match="unknown text split"):
        load_text_corpus("dev")


def test_text_file_loaders(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("plain text")
    assert load_text_file(tmp_path / "a.txt") == "plain text"
    (tmp_path / "b.jsonl").write_text('{"text": "one"}\n\n{"text": "two"}\n')
    assert load_text_file(tmp_path / "b.jsonl") == "one\n\ntwo"
    (tmp_path / "c.jsonl").write_text('{"text": "one"}\n{"text": \n')
    with pytest.raises(UserInputError, match=r"c.jsonl:2: malformed JSON"):
        load_text_file(tmp_path / "c.jsonl")
    (tmp_path / "d.jsonl").write_text('{"body": "one"}\n')
    with pytest.raises(UserInputError, match=r"d.jsonl:1: no 'text' key"):
        load_text_file(tmp_path / "d.jsonl")
    with pytest.raises(UserInputError, match="does not exist"):
        load_text_file(tmp_path / "missing.txt")

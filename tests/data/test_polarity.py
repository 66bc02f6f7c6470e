"""The sentence-polarity set: fixed, disjoint, balanced splits (any prefix too) read from the
installed package."""

from __future__ import annotations

from collections import Counter

import pytest

from mfmaccel.data.polarity import load_polarity
from mfmaccel.errors import UserInputError


def test_splits_are_disjoint_balanced_and_cover_every_sentence():
    splits = {name: load_polarity(name) for name in ("train", "val", "test")}
    texts = [s.text for sentences in splits.values() for s in sentences]
    assert len(texts) == 8530  # the package's Rotten Tomatoes rows
    for sentences in splits.values():
        counts = Counter(s.label for s in sentences)
        assert counts["positive"] == counts["negative"] > 0
    assert len(splits["test"]) == 2 * 853 and len(splits["val"]) < len(splits["test"])
    assert [s.label for s in splits["test"][:4]] == ["negative", "positive"] * 2
    train = {s.text for s in splits["train"]}
    assert not train & {s.text for s in splits["test"]}


def test_an_unknown_split_is_refused():
    with pytest.raises(UserInputError, match="choose one of: train, val, test"):
        load_polarity("dev")

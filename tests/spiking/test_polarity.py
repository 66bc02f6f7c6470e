"""Sentence polarity read by one probe from float, integer and spiking embeddings (tiny BERT)."""

from __future__ import annotations

import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.models import load_model
from mfmaccel.spiking.polarity import polarity_accuracy


def test_a_settled_spiking_encoder_scores_as_its_integer_program():
    found = polarity_accuracy(load_model("tiny-bert"), levels=None, steps=(1, 50),
                              spiking_sentences=12, calibration=16, sentences=120,
                              batch_size=8, avg_bits=(5,), uniform_bits=(8, 3))
    assert found.samples == {"train": 120, "val": 120, "test": 120}
    assert found.settled == found.batches == 2 and found.spiking_sentences == 12
    assert found.spiking_accuracy_at[50] == found.integer_subset_accuracy
    assert 0 <= found.float_accuracy <= 1 and found.majority_baseline == 0.5
    assert found.accumulates_per_mac > 0
    mixed, eight, three = found.weight_tiers
    assert mixed["name"] == "module@5-bits" and mixed["memory"]["average_bits"] <= 5
    assert eight["memory"] == found.memory and eight["integer_accuracy"] == found.integer_accuracy
    assert three["memory"]["weight_bytes"] < mixed["memory"]["weight_bytes"] \
        < eight["memory"]["weight_bytes"] < eight["memory"]["fp16_bytes"]


def test_only_an_encoder_is_scored():
    with pytest.raises(UserInputError, match="is not an encoder"):
        polarity_accuracy(load_model("tiny-llama"))

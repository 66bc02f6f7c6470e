"""Closed-question VQA: answer normalisation, likelihood ranking, accuracy records."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mfmaccel.data.medvqa import VQASample
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.vqa import (
    answer_scores,
    generate_answer,
    normalize_answer,
    rank_answer,
    vqa_accuracy,
    vqa_prompt,
)


def make_sample(answer: str = "yes", answers: tuple[str, ...] = ("yes", "no")) -> VQASample:
    return VQASample(
        image=Image.new("RGB", (48, 48), (120, 30, 30)),
        question="Is there a lesion?",
        answer=answer,
        question_type="presence",
        answer_set=list(answers),
        source_id="synthetic",
        split="test",
    )


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("The Upper-Left.", "upper left"), (" YES ", "yes"), ("an MRI", "mri"), ("2", "2")],
)
def test_normalize_answer(raw: str, clean: str) -> None:
    assert normalize_answer(raw) == clean


def single_candidate_score(model, sample: VQASample, answer: str) -> float:
    """Log-likelihood of one answer, computed alone (no batching, no padding)."""
    inputs = dict(
        model.processor(
            images=sample.image,
            text=vqa_prompt(model.processor, sample.question),
            return_tensors="pt",
        )
    )
    prompt = inputs.pop("input_ids")
    cand = model.processor.tokenizer(
        " " + answer, add_special_tokens=False, return_tensors="pt"
    ).input_ids
    ids = torch.cat([prompt, cand], dim=1)
    with torch.inference_mode():
        logp = model.module(input_ids=ids, pixel_values=inputs["pixel_values"]).logits
    logp = logp.log_softmax(-1)[0]
    start = prompt.shape[1]
    return float(sum(logp[start - 1 + i, t] for i, t in enumerate(cand[0].tolist())))


def test_cached_scores_equal_scoring_each_candidate_alone(tiny_llava) -> None:
    sample = make_sample("upper left", ("upper left", "upper right", "lower left", "no"))
    alone = [single_candidate_score(tiny_llava, sample, a) for a in sample.answer_set]
    assert answer_scores(tiny_llava, sample) == pytest.approx(alone, abs=1e-4)


def test_rank_picks_the_most_likely_candidate(tiny_llava) -> None:
    sample = make_sample("upper left", ("upper left", "upper right", "lower left", "no"))
    best = max(sample.answer_set, key=lambda a: single_candidate_score(tiny_llava, sample, a))
    assert rank_answer(tiny_llava, sample) == best


def test_accuracy_record(tiny_llava) -> None:
    samples = [make_sample("yes"), make_sample("no")]
    result = vqa_accuracy(tiny_llava, samples, majority_baseline={"overall": 0.5})
    assert result.n == 2 and result.accuracy == 0.5  # same image and question: one is wrong
    assert set(result.per_type) == {"presence"}
    generated = vqa_accuracy(tiny_llava, samples, mode="generate")
    assert generated.n == 2 and isinstance(generate_answer(tiny_llava, samples[0]), str)


def test_text_only_model_is_refused(tiny_llama) -> None:
    with pytest.raises(UserInputError, match="vision-language model"):
        vqa_accuracy(tiny_llama, [make_sample()])


def test_bad_mode_and_empty_set(tiny_llava) -> None:
    with pytest.raises(UserInputError, match="unknown VQA mode"):
        vqa_accuracy(tiny_llava, [make_sample()], mode="vote")
    with pytest.raises(UserInputError, match="no VQA samples"):
        vqa_accuracy(tiny_llava, [])

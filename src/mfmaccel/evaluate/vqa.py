"""Closed-question VQA accuracy for vision-language models, two ways:

- "rank": score every candidate answer by its log-likelihood after the question and pick the
  best (what VQA-RAD/SLAKE closed-question accuracy measures, free of formatting noise);
- "generate": greedy answer, compared by normalised exact match.
"""

from __future__ import annotations

import re
import string
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from mfmaccel.decode.engine import eos_ids, greedy_generate
from mfmaccel.errors import UserInputError
from mfmaccel.models.record import VLM, LoadedModel
from mfmaccel.records import Record

if TYPE_CHECKING:
    from mfmaccel.data.medvqa import VQASample

MODES = ("rank", "generate")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


@dataclass
class VQAResult(Record):
    model: str
    mode: str
    n: int
    accuracy: float
    per_type: dict[str, float]
    majority_baseline: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def normalize_answer(text: str) -> str:
    """Lower-case, no punctuation or articles, single spaces: 'The Upper-Left.' -> 'upper left'."""
    text = text.lower().replace("-", " ")
    text = text.translate(str.maketrans("", "", string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def vqa_prompt(processor, question: str) -> str:
    """The one prompt format used for training and evaluation: image, question, 'Answer:'."""
    return f"{processor.image_token}\nQuestion: {question}\nAnswer:"


def require_vlm(model: LoadedModel) -> None:
    if model.kind != VLM:
        raise UserInputError(
            f"VQA needs a vision-language model; '{model.name}' is a {model.kind} model "
            "(try tiny-llava, or medvlm once built)"
        )


def _prompt_inputs(model: LoadedModel, sample: VQASample) -> dict[str, torch.Tensor]:
    text = vqa_prompt(model.processor, sample.question)
    return dict(model.processor(images=sample.image, text=text, return_tensors="pt"))


@torch.inference_mode()
def rank_answer(model: LoadedModel, sample: VQASample) -> str:
    """The candidate in `sample.answer_set` with the highest total log-likelihood."""
    inputs = _prompt_inputs(model, sample)
    prompt_ids = inputs["input_ids"][0].tolist()
    tokenizer = model.processor.tokenizer
    candidates = [tokenizer(" " + a, add_special_tokens=False).input_ids for a in sample.answer_set]
    width = len(prompt_ids) + max(len(c) for c in candidates)
    pad = tokenizer.pad_token_id or 0
    ids = torch.full((len(candidates), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, cand in enumerate(candidates):
        seq = prompt_ids + cand
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    pixels = inputs["pixel_values"].expand(len(candidates), *inputs["pixel_values"].shape[1:])
    logprobs = model.module(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    logprobs = logprobs.float().log_softmax(-1)
    scores = []
    for row, cand in enumerate(candidates):
        positions = torch.arange(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(cand))
        scores.append(float(logprobs[row, positions, torch.tensor(cand)].sum()))
    return sample.answer_set[max(range(len(scores)), key=scores.__getitem__)]


def generate_answer(model: LoadedModel, sample: VQASample, max_new_tokens: int = 8) -> str:
    """Greedy answer up to the end of the first line."""
    inputs = _prompt_inputs(model, sample)
    tokenizer = model.processor.tokenizer
    newline = set(tokenizer("\n", add_special_tokens=False).input_ids[-1:])
    out = greedy_generate(
        model.module, inputs.pop("input_ids"), max_new_tokens,
        eos_token_ids=eos_ids(model.module, tokenizer) | newline, **inputs,
    )
    return tokenizer.decode(out.tokens, skip_special_tokens=True).strip()


def vqa_accuracy(
    model: LoadedModel,
    samples: Sequence[VQASample],
    mode: str = "rank",
    majority_baseline: dict[str, float] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VQAResult:
    """Accuracy overall and per question type on closed questions."""
    require_vlm(model)
    if mode not in MODES:
        raise UserInputError(f"unknown VQA mode '{mode}'; choose one of: {', '.join(MODES)}")
    if not samples:
        raise UserInputError("no VQA samples to evaluate; check the dataset and split")
    start = time.perf_counter()
    hits: dict[str, list[bool]] = defaultdict(list)
    for i, sample in enumerate(samples):
        answer = rank_answer(model, sample) if mode == "rank" else generate_answer(model, sample)
        correct = normalize_answer(answer) == normalize_answer(sample.answer)
        hits[sample.question_type].append(correct)
        if progress:
            progress(i + 1, len(samples))
    every = [h for group in hits.values() for h in group]
    return VQAResult(
        model=model.name, mode=mode, n=len(every), accuracy=sum(every) / len(every),
        per_type={k: sum(v) / len(v) for k, v in sorted(hits.items())},
        majority_baseline=majority_baseline or {}, seconds=time.perf_counter() - start,
    )

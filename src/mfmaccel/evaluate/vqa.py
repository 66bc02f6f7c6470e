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
from transformers import DynamicCache

from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.choices import VqaMode
from mfmaccel.models.record import VLM, LoadedModel
from mfmaccel.records import Record
from mfmaccel.runtime.engine import eos_ids, greedy_generate

if TYPE_CHECKING:
    from mfmaccel.data.medvqa import VQASample

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


def prompt_inputs(model: LoadedModel, sample: VQASample) -> dict[str, torch.Tensor]:
    text = vqa_prompt(model.processor, sample.question)
    return dict(model.processor(images=sample.image, text=text, return_tensors="pt"))


def rank_answer(model: LoadedModel, sample: VQASample) -> str:
    """The candidate in `sample.answer_set` with the highest total log-likelihood."""
    scores = answer_scores(model, sample)
    return sample.answer_set[max(range(len(scores)), key=scores.__getitem__)]


@torch.inference_mode()
def answer_scores(model: LoadedModel, sample: VQASample,
                  inputs: dict[str, torch.Tensor] | None = None) -> list[float]:
    """Total log-likelihood of each candidate answer (`" " + answer`) after the prompt.

    `inputs` are the processed prompt (`prompt_inputs`) when the caller already has them.
    The image and question run once; the candidates then continue from copies of that KV
    cache in one batch, so ranking k answers costs about one prompt, not k.
    """
    inputs = inputs if inputs is not None else prompt_inputs(model, sample)
    tokenizer = model.processor.tokenizer
    candidates = [tokenizer(" " + a, add_special_tokens=False).input_ids for a in sample.answer_set]
    cache = DynamicCache()
    prompt = model.module(**inputs, cache=cache, use_cache=True, logits_to_keep=1)
    first = prompt.logits[0, -1].float().log_softmax(-1)
    scores = [float(first[cand[0]]) for cand in candidates]
    longest = max(len(c) for c in candidates)
    if longest > 1:
        rows = len(candidates)
        ids = torch.full((rows, longest - 1), tokenizer.pad_token_id or 0, dtype=torch.long)
        for row, cand in enumerate(candidates):
            ids[row, : len(cand) - 1] = torch.tensor(cand[:-1])
        cache.batch_repeat_interleave(rows)
        mask = torch.ones(rows, inputs["input_ids"].shape[1] + longest - 1, dtype=torch.long)
        rest = model.module(input_ids=ids, attention_mask=mask, cache=cache,
                            use_cache=True).logits.float().log_softmax(-1)
        for row, cand in enumerate(candidates):
            scores[row] += sum(float(rest[row, j - 1, cand[j]]) for j in range(1, len(cand)))
    return scores


def generate_answer(model: LoadedModel, sample: VQASample, max_new_tokens: int = 8) -> str:
    """Greedy answer up to the end of the first line."""
    inputs = prompt_inputs(model, sample)
    tokenizer = model.processor.tokenizer
    newline = set(tokenizer("\n", add_special_tokens=False).input_ids[-1:])
    out = greedy_generate(
        model.module, inputs.pop("input_ids"), max_new_tokens,
        eos_token_ids=eos_ids(model.module, tokenizer) | newline, **inputs,
    )
    return tokenizer.decode(out.tokens, skip_special_tokens=True).strip()


def vqa_hits(model: LoadedModel, samples: Sequence[VQASample], mode: str = "rank",
             progress: Callable[[int, int], None] | None = None) -> list[bool]:
    """Whether each question is answered right, in order: what a paired comparison needs."""
    hits = []
    for i, sample in enumerate(samples):
        answer = rank_answer(model, sample) if mode == "rank" else generate_answer(model, sample)
        hits.append(normalize_answer(answer) == normalize_answer(sample.answer))
        if progress:
            progress(i + 1, len(samples))
    return hits


def vqa_accuracy(
    model: LoadedModel,
    samples: Sequence[VQASample],
    mode: str = "rank",
    majority_baseline: dict[str, float] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VQAResult:
    """Accuracy overall and per question type on closed questions."""
    require_vlm(model)
    if mode not in tuple(VqaMode):
        raise UserInputError(f"unknown VQA mode '{mode}'; choose one of: {', '.join(VqaMode)}")
    if not samples:
        raise UserInputError("no VQA samples to evaluate; check the dataset and split")
    start = time.perf_counter()
    every = vqa_hits(model, samples, mode, progress)
    hits: dict[str, list[bool]] = defaultdict(list)
    for sample, correct in zip(samples, every, strict=True):
        hits[sample.question_type].append(correct)
    return VQAResult(
        model=model.name, mode=mode, n=len(every), accuracy=sum(every) / len(every),
        per_type={k: sum(v) / len(v) for k, v in sorted(hits.items())},
        majority_baseline=majority_baseline or {}, seconds=time.perf_counter() - start,
    )

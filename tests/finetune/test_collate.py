"""Batches are in the evaluation's exact format, with the loss on the target tokens only."""

from __future__ import annotations

import torch
from PIL import Image

from mfmaccel.evaluate.vqa import vqa_prompt
from mfmaccel.finetune.collate import IGNORE, Collator, Example


def _collator(model) -> Collator:
    pixels = torch.zeros(2, 3, 64, 64)
    return Collator(model.processor, pixels)


def test_prompt_tokens_match_the_evaluation(tiny_medvlm):
    collate = _collator(tiny_medvlm)
    question = "Is there a lesion?"
    expected = tiny_medvlm.processor(
        images=Image.new("RGB", (224, 224)), text=vqa_prompt(tiny_medvlm.processor, question),
        return_tensors="pt",
    )["input_ids"][0].tolist()
    assert collate.prompt_ids(question) == expected
    # rank_answer scores " " + answer without special tokens; training appends only EOS
    answer = tiny_medvlm.tokenizer(" yes", add_special_tokens=False).input_ids
    assert collate.target_ids("yes") == answer + [tiny_medvlm.tokenizer.eos_token_id]


def test_labels_mask_prompt_and_padding(tiny_medvlm):
    collate = _collator(tiny_medvlm)
    examples = [Example(0, "Is there a lesion?", "yes"),
                Example(1, "How many lesions are there?", "upper left")]
    batch = collate(examples)
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values", "labels"}
    for row, example in enumerate(examples):
        prompt = collate.prompt_ids(example.question)
        target = collate.target_ids(example.target)
        labels = batch["labels"][row]
        assert (labels[: len(prompt)] == IGNORE).all()
        assert labels[len(prompt): len(prompt) + len(target)].tolist() == target
        assert (labels[len(prompt) + len(target):] == IGNORE).all()
        assert batch["attention_mask"][row].sum() == len(prompt) + len(target)
    image_id = tiny_medvlm.module.config.image_token_id
    assert ((batch["input_ids"] == image_id) & (batch["labels"] != IGNORE)).sum() == 0
    assert batch["pixel_values"].shape == (2, 3, 64, 64)

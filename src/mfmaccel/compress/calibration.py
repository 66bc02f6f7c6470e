"""Calibration text for sensitivity and GPTQ: windows of the training half of the text corpus
(the evaluation uses the disjoint test half), or of a user's own text file."""

from __future__ import annotations

import torch

from mfmaccel.data.text import load_text_corpus, load_text_file
from mfmaccel.errors import UserInputError


def calibration_batches(tokenizer, tokens: int = 2048, window: int = 512,
                        path: str | None = None) -> list[torch.Tensor]:
    """`tokens` tokens of calibration text as (1, window) id tensors, from the start."""
    text = load_text_file(path) if path else load_text_corpus("train")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    if len(ids) < min(tokens, window):
        raise UserInputError(f"calibration text has {len(ids)} tokens; give at least {window}")
    ids = ids[:tokens]
    return [ids[i:i + window].unsqueeze(0) for i in range(0, len(ids) - 1, window)
            if len(ids[i:i + window]) > 1]

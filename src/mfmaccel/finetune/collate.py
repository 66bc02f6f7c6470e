"""Training batches in exactly the evaluation's format: `vqa_prompt` (image tokens, question,
"Answer:") followed by " " + the target text and EOS, with the loss on the target tokens only.

The prompt is tokenised by the model's own processor (which expands the image token), and the
target as `rank_answer` tokenises a candidate (`" " + answer`, no special tokens), so a trained
answer is scored by the evaluation as the very token sequence it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from mfmaccel.evaluate.vqa import vqa_prompt

IGNORE = -100  # label of a position without loss


@dataclass(frozen=True)
class Example:
    """One training pair: row `image` of the phase's pixel tensor, a question, its target."""

    image: int
    question: str
    target: str


class Collator:
    """Builds (input_ids, attention_mask, pixel_values, labels) from `Example`s."""

    def __init__(self, processor, pixels: torch.Tensor, add_eos: bool = True) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.pixels = pixels
        eos = self.tokenizer.eos_token_id
        self.eos = [eos] if add_eos and eos is not None else []
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._prompts: dict[str, list[int]] = {}

    def prompt_ids(self, question: str) -> list[int]:
        """Token ids of `vqa_prompt(question)` with the image token expanded (cached: the
        expansion depends on the processor, not on the image)."""
        if question not in self._prompts:
            blank = Image.new("RGB", (64, 64))
            text = vqa_prompt(self.processor, question)
            ids = self.processor(images=blank, text=text, return_tensors="pt")["input_ids"][0]
            self._prompts[question] = ids.tolist()
        return self._prompts[question]

    def target_ids(self, target: str) -> list[int]:
        return self.tokenizer(" " + target, add_special_tokens=False).input_ids + self.eos

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        rows = [(self.prompt_ids(e.question), self.target_ids(e.target)) for e in examples]
        width = max(len(p) + len(t) for p, t in rows)
        input_ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        labels = torch.full_like(input_ids, IGNORE)
        attention_mask = torch.zeros_like(input_ids)
        for row, (prompt, target) in enumerate(rows):
            end = len(prompt) + len(target)
            input_ids[row, :end] = torch.tensor(prompt + target)
            labels[row, len(prompt):end] = torch.tensor(target)
            attention_mask[row, :end] = 1
        pixel_values = self.pixels[[e.image for e in examples]].float()
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "pixel_values": pixel_values, "labels": labels}

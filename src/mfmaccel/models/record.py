"""The record every loader returns: the module plus what later stages need to know about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from mfmaccel.runtime.anatomy import embeddings_tied

# What a model can be asked to do; evaluations check this before any work starts.
CAUSAL_LM = "causal-lm"
ENCODER = "encoder"
VISION = "vision"
VLM = "vlm"


@dataclass
class LoadedModel:
    """A model ready to run: `module` in eval mode plus its tokenizer or processor."""

    name: str
    module: torch.nn.Module
    tokenizer: Any
    family: str  # the Hugging Face model_type, e.g. "llama", "qwen2", "bert", "llava"
    kind: str  # CAUSAL_LM | ENCODER | VISION | VLM
    source: str  # where the weights came from (package, folder, file, or "random init")
    processor: Any = None  # image processor / multimodal processor for VISION and VLM models
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> int:
        """Distinct parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.module.parameters())

    @property
    def multiply_weights(self) -> int:
        """Weights a token is multiplied through, packed ones included: all but the token
        embedding, which is looked up (a tied one is the head too, so it counts once). A
        forward pass costs about 2 x this FLOPs per token (`decode.cascade`)."""
        packed = sum(m.in_features * m.out_features for m in self.module.modules()
                     if getattr(m, "is_packed", False))
        embed = self.module.get_input_embeddings()
        if embed is None or embeddings_tied(self.module):
            return self.params + packed
        looked_up = (embed.in_features * embed.out_features if getattr(embed, "is_packed", False)
                     else embed.weight.numel())
        return self.params + packed - looked_up

    @property
    def weight_bytes(self) -> int:
        """Bytes the parameters occupy in their current dtype (tied weights counted once), plus
        the true size of packed quantized layers (integers, scales, zero points)."""
        packed = sum(m.nbytes for m in self.module.modules() if getattr(m, "is_packed", False))
        return packed + sum(p.numel() * p.element_size() for p in self.module.parameters())

    @property
    def context_length(self) -> int | None:
        """Longest sequence the model's positions allow, when its config says."""
        config = getattr(self.module, "config", None)
        text_config = getattr(config, "text_config", None) or config
        return getattr(text_config, "max_position_embeddings", None)

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description for reports."""
        return {
            "name": self.name,
            "family": self.family,
            "kind": self.kind,
            "source": self.source,
            "params": self.params,
            "weight_bytes": self.weight_bytes,
            "dtype": str(next(self.module.parameters()).dtype).removeprefix("torch."),
        }

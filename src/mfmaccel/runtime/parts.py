"""The parts of a model that get one number format each: every linear of every block, the head,
and untied token embeddings. A quantization plan names them; the packed layers replace them."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from mfmaccel.runtime.anatomy import (
    decoder_layers,
    embeddings_tied,
    has_head,
    linear_layers,
    weight_matrix,
)

HEAD = "head"  # the output projection (tied to the token embeddings when the model ties them)
EMBED = "embed"  # untied token embeddings: a table as large as the head, read by lookup


@dataclass
class Part:
    """A unit that gets one bit-width: a linear layer, the head, or untied token embeddings."""

    name: str  # "layers.3.mlp.down_proj", "head" or "embed"
    block: str  # "layers.3", "head" or "embed"
    out_features: int
    in_features: int

    @property
    def params(self) -> int:
        return self.out_features * self.in_features


def quantizable_parts(module: nn.Module) -> dict[str, tuple[Part, nn.Module]]:
    """Every linear of every block, plus the head, plus untied token embeddings (in Qwen2.5
    0.5B they are a fifth of the model), with the module holding each weight."""
    parts: dict[str, tuple[Part, nn.Module]] = {}
    embed = None if embeddings_tied(module) else module.get_input_embeddings()
    if embed is not None:  # None: blocks fed by something else (a vision tower's patches)
        vocab, hidden = weight_matrix(embed).shape
        parts[EMBED] = (Part(EMBED, EMBED, vocab, hidden), embed)
    for index, block in enumerate(decoder_layers(module)):
        for path, layer in linear_layers(block).items():
            out, inp = weight_matrix(layer).shape
            name = f"layers.{index}.{path}"
            parts[name] = (Part(name, f"layers.{index}", out, inp), layer)
    if has_head(module):
        head = module.get_output_embeddings()
        out, inp = head.weight.shape
        parts[HEAD] = (Part(HEAD, HEAD, out, inp), head)
    return parts

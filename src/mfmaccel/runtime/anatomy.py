"""Where things sit inside a Hugging Face transformer: its block list (causal LM, a VLM's
language model, a BERT encoder), the final norm, the linear layers of a block, the head and
whether the token embeddings are tied to it. Quantized layers, their storage, compression and
the hardware models all find a model's parts through these."""

from __future__ import annotations

import torch
from torch import nn

LAYER_LISTS = ("layers", "h", "blocks", "layer")
FINAL_NORMS = ("norm", "ln_f", "final_layernorm")


def _block_list(body: nn.Module) -> nn.ModuleList | None:
    """The block list of a body, directly on it or on its `encoder` (BertModel)."""
    for owner in (body, getattr(body, "encoder", None)):
        for name in LAYER_LISTS:
            if isinstance(getattr(owner, name, None), nn.ModuleList):
                return getattr(owner, name)
    return None


def decoder_body(module: nn.Module) -> nn.Module:
    """The submodule that takes token ids and runs the blocks (LlamaModel, GPT2Model, a VLM's
    language model, or a BERT encoder model itself)."""
    for candidate in (getattr(module, "model", None), getattr(module, "transformer", None),
                      module if hasattr(module, "encoder") else None):
        if candidate is None:
            continue
        inner = getattr(candidate, "language_model", candidate)
        if _block_list(inner) is not None:
            return inner
    raise ValueError(f"{type(module).__name__}: no transformer block list found")


def decoder_layers(module: nn.Module) -> nn.ModuleList:
    return _block_list(decoder_body(module))


def final_norm(module: nn.Module) -> nn.Module:
    """The norm between the last block and the head (an identity for BERT, whose blocks end
    in their own LayerNorm)."""
    body = decoder_body(module)
    for name in FINAL_NORMS:
        if isinstance(getattr(body, name, None), nn.Module):
            return getattr(body, name)
    if hasattr(body, "encoder"):
        return nn.Identity()
    raise ValueError(f"{type(body).__name__}: no final norm found")


def linear_layers(block: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear (or GPT-2 Conv1D) inside a block, by its path ("self_attn.q_proj")."""
    return {name: child for name, child in block.named_modules()
            if isinstance(child, nn.Linear) or type(child).__name__ == "Conv1D"}


def weight_matrix(layer: nn.Module) -> torch.Tensor:
    """(out, in) view of a Linear or GPT-2 Conv1D (which stores (in, out))."""
    return layer.weight.T if type(layer).__name__ == "Conv1D" else layer.weight


def has_head(module: torch.nn.Module) -> bool:
    return module.get_output_embeddings() is not None


def embeddings_tied(module: torch.nn.Module) -> bool:
    """Whether the token embeddings read the head's weight (stored once, quantized as the head)."""
    configs = (module.config, module.config.get_text_config())
    return has_head(module) and any(getattr(c, "tie_word_embeddings", False) for c in configs)

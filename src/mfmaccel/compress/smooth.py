"""Outlier smoothing for int8 activations (SmoothQuant, Xiao et al. 2023) on Llama-family
decoders: an exact float rewrite, done before quantization.

A few activation channels of an LLM are far larger than the rest, so one static int8 scale per
tensor rounds the others to nothing. For each linear input X and factors s (one per channel),
X W^T = (X / s)(W s)^T: the division folds into whatever produced X, the multiplication into
the weight's columns. With s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) the range moves
from the activation into the (per-channel-quantized) weights. Here every linear input of a
block gets it:
- q, k, v and gate, up inputs: divided in the RMSNorm weights before them;
- o_proj input (attention output = probabilities x V): divided in v_proj's output rows, one
  factor per key/value channel shared by the query heads that read it;
- down_proj input (silu(gate) * up): divided in up_proj's output rows.
The head's input (the final norm) is left alone: the head is tied to the embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mfmaccel.compress.calibration import record_ranges
from mfmaccel.errors import UserInputError
from mfmaccel.runtime.anatomy import decoder_layers

NEEDED = ("input_layernorm", "post_attention_layernorm")


def _factors(activation: torch.Tensor, weights: Sequence[torch.Tensor],
             alpha: float) -> torch.Tensor:
    w = torch.stack([weight.detach().abs().amax(0) for weight in weights]).amax(0)
    return (activation.clamp(min=1e-5) ** alpha / w.clamp(min=1e-5) ** (1 - alpha)).float()


def _input_ranges(module: nn.Module, batches: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Largest |x| per input channel of every q, o, gate and down projection."""
    taps = {f"{index}.{name}": (layer.get_submodule(name), "input")
            for index, layer in enumerate(decoder_layers(module))
            for name in ("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj",
                         "mlp.down_proj")}
    ranges = record_ranges(module, taps, lambda: (module(input_ids=b) for b in batches))
    return {name: channels.float() for name, channels in ranges.channels.items()}


def _check(layer: nn.Module) -> None:
    if not all(hasattr(layer, n) for n in NEEDED) or not hasattr(layer.mlp, "up_proj"):
        raise UserInputError(f"{type(layer).__name__}: smoothing needs a Llama-family block "
                             "(RMSNorms before attention and MLP, gate/up/down projections)")


@torch.no_grad()
def smooth_llama(module: nn.Module, batches: Sequence[torch.Tensor], alpha: float = 0.5) -> int:
    """Rewrite `module`'s weights in place so its linear inputs have fewer outliers; the
    float outputs are unchanged (up to rounding). Returns how many inputs were smoothed."""
    if not 0 <= alpha <= 1:
        raise UserInputError(f"smoothing alpha must lie in [0, 1], got {alpha}")
    layers = decoder_layers(module)
    for layer in layers:
        _check(layer)
    ranges = _input_ranges(module, batches)
    for index, layer in enumerate(layers):
        attn, mlp = layer.self_attn, layer.mlp
        s = _factors(ranges[f"{index}.self_attn.q_proj"],
                     [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight], alpha)
        layer.input_layernorm.weight.div_(s)
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            proj.weight.mul_(s)
        _smooth_attention_output(attn, ranges[f"{index}.self_attn.o_proj"], alpha)
        s = _factors(ranges[f"{index}.mlp.gate_proj"], [mlp.gate_proj.weight,
                                                        mlp.up_proj.weight], alpha)
        layer.post_attention_layernorm.weight.div_(s)
        mlp.gate_proj.weight.mul_(s)
        mlp.up_proj.weight.mul_(s)
        s = _factors(ranges[f"{index}.mlp.down_proj"], [mlp.down_proj.weight], alpha)
        _divide_rows(mlp.up_proj, s)
        mlp.down_proj.weight.mul_(s)
    return 4 * len(layers)


def _smooth_attention_output(attn: nn.Module, activation: torch.Tensor, alpha: float) -> None:
    """o_proj's input channel (head h, dim d) is v's channel (kv head of h, d): one factor per
    v channel, the largest need among the query heads sharing it."""
    head_dim = attn.head_dim
    kv_channels = attn.v_proj.out_features
    groups = attn.o_proj.in_features // kv_channels
    per_query = activation.view(-1, head_dim)  # (query heads, head_dim)
    per_kv = per_query.view(kv_channels // head_dim, groups, head_dim).amax(1).reshape(-1)
    weight = attn.o_proj.weight.view(attn.o_proj.out_features, -1, groups, head_dim)
    w_per_kv = weight.abs().amax(0).amax(1).reshape(-1)  # (kv_channels,)
    s = (per_kv.clamp(min=1e-5) ** alpha / w_per_kv.clamp(min=1e-5) ** (1 - alpha)).float()
    _divide_rows(attn.v_proj, s)
    expanded = s.view(-1, 1, head_dim).expand(-1, groups, head_dim).reshape(-1)
    attn.o_proj.weight.mul_(expanded)


def _divide_rows(linear: nn.Linear, s: torch.Tensor) -> None:
    linear.weight.div_(s[:, None])
    if linear.bias is not None:
        linear.bias.div_(s)

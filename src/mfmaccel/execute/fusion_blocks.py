"""A Llama/Qwen2 decoder block rebuilt with its repeated operations fused: one q/k/v product
with rotary embeddings applied to q and k in one pass, one gate/up product, RMSNorm weights
folded into those products, and a lean forward.

The block keeps the call signature, the cache slot (`layer_idx`) and the attention functions
of transformers' own block, so the model around it (masks, rotary tables, the KV cache,
sliding windows) runs unchanged. Why the lean forward counts: a decode step of a small model
is a few hundred tiny operations, and transformers' block adds keyword plumbing, deprecation
wrappers and output-capturing hooks around each; the GEMMs are the same bytes either way.

Residual add + norm: eager PyTorch has no kernel doing both. `F.rms_norm` (one aten call for
the norm) and an in-place add are what helps: 17.7 -> 11.5 us per add+norm at one token and
286 -> 249 us at 512 (`benchmarks/fusion.py`, `add_norm_microseconds`); under 1% of a decode
step either way. The block adds each residual into the fresh product output in place, then
normalises.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import eager_attention_forward

from mfmaccel.execute.fusion_linear import ProjectionGroup, fold_column_scale
from mfmaccel.execute.fusion_packed import PackedLinear, prepacked

ATTENTION_SETTINGS = ("config", "layer_idx", "head_dim", "num_key_value_groups", "scaling",
                      "attention_dropout", "is_causal")


class RMSNormalize(nn.Module):
    """RMSNorm through `F.rms_norm`; without a weight when the next product took it over."""

    def __init__(self, eps: float, weight: torch.Tensor | None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = None if weight is None else nn.Parameter(weight.detach(),
                                                               requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.rms_norm(x, (x.shape[-1],), self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, weight={'kept' if self.weight is not None else 'folded'}"


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of (batch, tokens, heads, head_dim) with (batch, tokens, head_dim)
    tables: transformers' `x * cos + rotate_half(x) * sin`, element for element."""
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    half = x.shape[-1] // 2
    turned = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + turned * sin


class FusedAttention(nn.Module):
    """Self-attention with one q/k/v product (GQA's narrower k/v kept apart by width)."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        for name in ATTENTION_SETTINGS:
            setattr(self, name, getattr(attention, name))
        self.sliding_window = getattr(attention, "sliding_window", None)
        self.qkv_proj = ProjectionGroup([attention.q_proj, attention.k_proj, attention.v_proj])
        self.o_proj = attention.o_proj

    def rotated_qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """q, k (rotated) and v as (batch, heads, tokens, head_dim)."""
        shape = (*x.shape[:-1], -1, self.head_dim)
        q_width, k_width, _ = self.qkv_proj.widths
        if self.qkv_proj.is_fused:  # q and k sit side by side: rotate them in one pass
            out = self.qkv_proj.fused(x)
            qk = rotate(out[..., :q_width + k_width].view(shape), cos, sin)
            q, k = qk.split([q_width // self.head_dim, k_width // self.head_dim], dim=-2)
            v = out[..., q_width + k_width:].view(shape)
        else:
            q, k, v = (part.view(shape) for part in self.qkv_proj(x))
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, hidden_states: torch.Tensor, position_embeddings, attention_mask,
                cache=None, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        q, k, v = self.rotated_qkv(hidden_states, *position_embeddings)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx, kwargs=kwargs)
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                       eager_attention_forward)
        out, weights = attend(self, q, k, v, attention_mask,
                              dropout=self.attention_dropout if self.training else 0.0,
                              scaling=self.scaling, sliding_window=self.sliding_window, **kwargs)
        return self.o_proj(out.reshape(*hidden_states.shape[:-1], -1)), weights


class FusedMLP(nn.Module):
    """SwiGLU with one gate/up product: act(gate) * up on its two halves, then down."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.gate_up_proj = ProjectionGroup([mlp.gate_proj, mlp.up_proj])
        self.down_proj = mlp.down_proj
        self.act_fn = mlp.act_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x)
        return self.down_proj(self.act_fn(gate).mul_(up))


def _normalize_into(norm: nn.Module, group: ProjectionGroup) -> tuple[RMSNormalize, bool]:
    """The norm in front of `group`, its weight folded into the group's columns where it can."""
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    if fold_column_scale(group, norm.weight):
        return RMSNormalize(eps, None), True
    return RMSNormalize(eps, norm.weight), False


class FusedDecoderBlock(nn.Module):
    """Pre-norm decoder block: x + attn(norm(x)), then + mlp(norm(.)); transformers' call."""

    def __init__(self, layer: nn.Module, *, prepack: bool = True) -> None:
        super().__init__()
        self.self_attn = FusedAttention(layer.self_attn)
        self.mlp = FusedMLP(layer.mlp)
        self.input_layernorm, folded_in = _normalize_into(layer.input_layernorm,
                                                          self.self_attn.qkv_proj)
        self.post_attention_layernorm, folded_post = _normalize_into(
            layer.post_attention_layernorm, self.mlp.gate_up_proj)
        self.norms_folded = int(folded_in) + int(folded_post)
        if prepack:
            self._prepack()
        if hasattr(layer, "attention_type"):
            self.attention_type = layer.attention_type

    def _prepack(self) -> None:
        """Every float product of the block in oneDNN's packed layout (`fusion_packed`)."""
        for group in (self.self_attn.qkv_proj, self.mlp.gate_up_proj):
            if group.is_fused:
                group.fused = prepacked(group.fused)
            else:
                group.parts = nn.ModuleList(prepacked(part) for part in group.parts)
        self.self_attn.o_proj = prepacked(self.self_attn.o_proj)
        self.mlp.down_proj = prepacked(self.mlp.down_proj)

    @property
    def packed_layers(self) -> int:
        return sum(isinstance(child, PackedLinear) for child in self.modules())

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, position_ids=None,
                cache=None, use_cache=False, position_embeddings=None, **kwargs) -> torch.Tensor:
        cache = cache if cache is not None else kwargs.pop("past_key_values", None)
        update, _ = self.self_attn(self.input_layernorm(hidden_states), position_embeddings,
                                   attention_mask, cache, **kwargs)
        hidden_states = update.add_(hidden_states)  # update is a fresh product output
        return self.mlp(self.post_attention_layernorm(hidden_states)).add_(hidden_states)

"""Encoder blocks rebuilt with their repeated operations fused: ViT and DINOv2 (pre-norm) and
BERT (post-norm).

Pre-norm, x + attention(norm1(x)), then + mlp(norm2(.)): q/k/v run as one product; each
LayerNorm's affine folds into the product after it (`fusion_encoder_fold`), so the norm only
normalises; DINOv2's LayerScale folds into the attention's output projection and the MLP's
last linear; the residual adds run in place into the fresh product outputs. Post-norm (BERT),
LN(x + attention(x)), then LN(. + mlp(.)): a norm's output is also the next residual, so its
affine cannot fold; q/k/v still run as one product. Every float product is prepacked
(`fusion_packed`) unless asked otherwise. Attention runs through
`F.scaled_dot_product_attention` with the mask the model built, so BERT's padding masks stay
what transformers made them.

Each block subclasses the block it replaces, so transformers' hooks record its output as a
hidden state, and keeps that block's call signature and return type. Its attention is not
transformers' attention class: `output_attentions` records nothing for a fused block. Dropout
and DINOv2's drop path still apply in training mode; BERT's feed-forward chunking (memory only)
does not.

The pre-norm block keeps DINOv2's attribute names (norm1, attention.q_proj/k_proj/v_proj/o_proj
and head_dim/scaling, layer_scale1, norm2, mlp, layer_scale2), so ToMe's merging blocks
(`execute.tome.merging_block`) run it as they run DINOv2's; there q, k and v come from slices
of the stacked weight, three products.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn
from torch.nn import functional
from transformers.models.bert.modeling_bert import BertLayer
from transformers.models.dinov2.modeling_dinov2 import Dinov2Layer, Dinov2SwiGLUFFN
from transformers.models.vit.modeling_vit import ViTLayer

from mfmaccel.execute.fusion_blocks import FusedMLP
from mfmaccel.execute.fusion_encoder_fold import (
    fold_norm_into_group,
    with_input_affine,
    with_output_scale,
)
from mfmaccel.execute.fusion_linear import ProjectionGroup
from mfmaccel.execute.fusion_packed import PackedLinear, prepacked


class LayerNormalize(nn.Module):
    """LayerNorm through `F.layer_norm`; without weight and bias once the next product took
    them over."""

    def __init__(self, norm: nn.LayerNorm, *, folded: bool) -> None:
        super().__init__()
        self.shape, self.eps = tuple(norm.normalized_shape), norm.eps
        self.weight = None if folded else norm.weight
        self.bias = None if folded else norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.layer_norm(x, self.shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        affine = "kept" if self.weight is not None else "folded"
        return f"{self.shape}, eps={self.eps}, affine={affine}"


class FusedSelfAttention(nn.Module):
    """Bidirectional self-attention: q/k/v in one product, SDPA, the output projection."""

    def __init__(self, projections: Sequence[nn.Module], output: nn.Module, *, head_dim: int,
                 scaling: float, dropout: float) -> None:
        super().__init__()
        self.qkv_proj = ProjectionGroup(projections)
        self.o_proj = output
        self.head_dim, self.scaling, self.dropout = head_dim, scaling, dropout

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q, k, v as (batch, heads, tokens, head_dim)."""
        shape = (*x.shape[:-1], -1, self.head_dim)
        return tuple(part.view(shape).transpose(1, 2) for part in self.qkv_proj(x))

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.heads(x)
        out = functional.scaled_dot_product_attention(
            q, k, v, attn_mask=attention_mask, scale=self.scaling,
            dropout_p=self.dropout if self.training else 0.0)
        return self.o_proj(out.transpose(1, 2).reshape(*x.shape[:-1], -1))

    def _part(self, index: int):
        """Projection `index` alone: a slice of the stacked float weight (no copy)."""
        group = self.qkv_proj
        if group.fused is None:
            return group.parts[index]
        if not isinstance(group.fused, nn.Linear):  # packed integers: slice the whole product
            return lambda x: group(x)[index]
        start = sum(group.widths[:index])
        stop = start + group.widths[index]
        bias = group.fused.bias
        return partial(functional.linear, weight=group.fused.weight[start:stop],
                       bias=None if bias is None else bias[start:stop])

    # what `execute.tome.attend` reads off DINOv2's attention
    q_proj = property(lambda self: self._part(0))
    k_proj = property(lambda self: self._part(1))
    v_proj = property(lambda self: self._part(2))


class PlainMLP(nn.Module):
    """fc1, activation, fc2 (ViT's, DINOv2's and BERT's feed-forward)."""

    def __init__(self, fc1: nn.Module, activation: nn.Module, fc2: nn.Module) -> None:
        super().__init__()
        self.fc1, self.activation_fn, self.fc2 = fc1, activation, fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))


def _mlp_after(mlp: nn.Module, norm: nn.LayerNorm) -> tuple[nn.Module, bool]:
    """The block's MLP with `norm`'s affine folded into its first product where it can."""
    if isinstance(mlp, Dinov2SwiGLUFFN):
        fused = FusedMLP(mlp)  # gate/up in one product
        return fused, fold_norm_into_group(norm, fused.gate_up_proj)
    first = with_input_affine(mlp.fc1, gamma=norm.weight, beta=norm.bias)
    return PlainMLP(first if first is not None else mlp.fc1, mlp.activation_fn, mlp.fc2), \
        first is not None


def _scale_into(owner: nn.Module, name: str, scale: nn.Module | None) -> tuple[nn.Module, bool]:
    """(what the block still multiplies the update by, whether `scale` folded into the product
    `owner.<name>`)."""
    if scale is None:
        return nn.Identity(), False
    folded = with_output_scale(getattr(owner, name), scale.lambda1)
    if folded is None:
        return scale, False
    setattr(owner, name, folded)
    return nn.Identity(), True


def prepack_products(block: nn.Module) -> None:
    """Every float product of the block's own attention and MLP in oneDNN's packed layout."""
    for module in list(block.modules()):
        if isinstance(module, ProjectionGroup):
            if module.fused is not None:
                module.fused = prepacked(module.fused)
            else:
                module.parts = nn.ModuleList(prepacked(part) for part in module.parts)
        elif isinstance(module, (FusedSelfAttention, PlainMLP, FusedMLP)):
            for name in ("o_proj", "fc1", "fc2", "down_proj"):
                if name in module._modules:
                    setattr(module, name, prepacked(module._modules[name]))


class EncoderBlockCounts:
    """What a fused block took over, for the fusion report."""

    norms_folded: int = 0
    scales_folded: int = 0
    attention: FusedSelfAttention
    mlp: nn.Module

    @property
    def packed_layers(self) -> int:
        return sum(isinstance(child, PackedLinear) for child in self.modules())


class FusedPreNormBlock(EncoderBlockCounts, nn.Module):
    """ViT's or DINOv2's block (see the module docstring), with DINOv2's attribute names."""

    def __init__(self, layer: nn.Module, *, prepack: bool = True) -> None:
        nn.Module.__init__(self)  # not the replaced class's: it would allocate new weights
        attention = layer.attention
        self.attention = FusedSelfAttention(
            [attention.q_proj, attention.k_proj, attention.v_proj], attention.o_proj,
            head_dim=attention.head_dim, scaling=attention.scaling,
            dropout=attention.attention_dropout)
        norm1, norm2 = (layer.norm1, layer.norm2) if isinstance(layer, Dinov2Layer) else \
            (layer.layernorm_before, layer.layernorm_after)
        folded_in = fold_norm_into_group(norm1, self.attention.qkv_proj)
        self.norm1 = LayerNormalize(norm1, folded=folded_in)
        self.mlp, folded_out = _mlp_after(layer.mlp, norm2)
        self.norm2 = LayerNormalize(norm2, folded=folded_out)
        self.norms_folded = int(folded_in) + int(folded_out)
        last = "down_proj" if isinstance(self.mlp, FusedMLP) else "fc2"
        self.layer_scale1, scaled_in = _scale_into(self.attention, "o_proj",
                                                   getattr(layer, "layer_scale1", None))
        self.layer_scale2, scaled_out = _scale_into(self.mlp, last,
                                                    getattr(layer, "layer_scale2", None))
        self.scales_folded = int(scaled_in) + int(scaled_out)
        self.dropout = getattr(layer, "dropout", nn.Identity())  # ViT's hidden dropout
        self.drop_path = getattr(layer, "drop_path", nn.Identity())  # DINOv2's
        if prepack:
            prepack_products(self)

    def _update(self, update: torch.Tensor, scale: nn.Module) -> torch.Tensor:
        if not isinstance(scale, nn.Identity):  # a LayerScale that could not fold
            update = scale(update)
        if self.training:
            update = self.drop_path(self.dropout(update))
        return update

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs) -> torch.Tensor:
        update = self.attention(self.norm1(hidden_states), attention_mask)
        hidden_states = self._update(update, self.layer_scale1).add_(hidden_states)
        update = self.mlp(self.norm2(hidden_states))
        return self._update(update, self.layer_scale2).add_(hidden_states)


class FusedViTBlock(FusedPreNormBlock, ViTLayer):
    """A fused `ViTLayer` (recorded by transformers' hidden-state hooks as one)."""


class FusedDinov2Block(FusedPreNormBlock, Dinov2Layer):
    """A fused `Dinov2Layer` (recorded by transformers' hidden-state hooks as one)."""


class FusedBertBlock(EncoderBlockCounts, BertLayer):
    """BERT's encoder block, post-norm: q/k/v in one product, both LayerNorms kept."""

    def __init__(self, layer: nn.Module, *, prepack: bool = True) -> None:
        nn.Module.__init__(self)
        self_attention, output = layer.attention.self, layer.attention.output
        self.attention = FusedSelfAttention(
            [self_attention.query, self_attention.key, self_attention.value], output.dense,
            head_dim=self_attention.attention_head_size, scaling=self_attention.scaling,
            dropout=self_attention.dropout.p)
        self.attention_dropout, self.attention_norm = output.dropout, output.LayerNorm
        self.mlp = PlainMLP(layer.intermediate.dense, layer.intermediate.intermediate_act_fn,
                            layer.output.dense)
        self.mlp_dropout, self.mlp_norm = layer.output.dropout, layer.output.LayerNorm
        self.is_decoder = self.add_cross_attention = False
        if prepack:
            prepack_products(self)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                *args, **kwargs) -> torch.Tensor:
        update = self.attention(hidden_states, attention_mask)
        if self.training:
            update = self.attention_dropout(update)
        hidden_states = self.attention_norm(update.add_(hidden_states))
        update = self.mlp(hidden_states)
        if self.training:
            update = self.mlp_dropout(update)
        return self.mlp_norm(update.add_(hidden_states))


FUSED_BLOCKS = {"ViTLayer": FusedViTBlock, "Dinov2Layer": FusedDinov2Block,
                "BertLayer": FusedBertBlock}

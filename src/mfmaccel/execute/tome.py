"""Token merging inside the vision tower (ToMe: Bolya et al., "Token Merging: Your ViT but
Faster", ICLR 2023).

In every block, between the attention and the MLP, the r most redundant tokens are merged
away by bipartite soft matching: the tokens are split alternately into sets A and B, each A
token finds its most similar B token (cosine similarity of the attention keys, averaged over
heads), and the r A tokens with the best match are averaged into their B partner, weighted by
how many patches each already stands for. The CLS token is never merged. A token's size (its
patch count) is tracked, and attention adds log(size) to the logits of the keys (proportional
attention), so a merged token draws the attention its patches would have drawn together.

Unlike the reference code, the kept tokens stay in their original order (the CLS token first,
then the rest in raster order of where they came from): a LLaVA reads the tower's tokens as a
sequence, in order. A LLaVA's language model gets the tower's tokens at the layer it reads
(`vision_feature_layer`), so merging runs in the blocks up to that layer, and the processor
writes exactly as many `<image>` tokens as are left there.

The copy runs the tower's own modules (weights shared) through `MergingTower`, which replaces
the tower's forward; DINOv2 and CLIP towers are known.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from mfmaccel.errors import UserInputError
from mfmaccel.execute.tower import (
    CLIP,
    DINOV2,
    image_tokens,
    tower_family,
    tower_geometry,
    vision_tower,
    with_tower,
)
from mfmaccel.models.record import VLM, LoadedModel


def bipartite_merge(x: torch.Tensor, size: torch.Tensor, metric: torch.Tensor, *, r: int,
                    protected: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, size) with r tokens merged away: `x` (batch, tokens, width) and `size` (batch,
    tokens, 1) patches per token, matched on `metric` (batch, tokens, d); the first `protected`
    tokens take no part. Merged tokens are size-weighted averages; order is kept."""
    if r <= 0:
        return x, size
    head, body, body_size = x[:, :protected], x[:, protected:], size[:, protected:]
    unit = metric[:, protected:] / metric[:, protected:].norm(dim=-1, keepdim=True)
    best, match = (unit[:, ::2] @ unit[:, 1::2].transpose(1, 2)).max(dim=-1)
    order = best.argsort(dim=-1, descending=True)
    merged, kept = order[:, :r], order[:, r:]
    weighted = body * body_size
    parts = []
    for values in (weighted, body_size):
        a, b = values[:, ::2], values[:, 1::2]
        width = values.shape[-1]
        moved = a.gather(1, merged[..., None].expand(-1, -1, width))
        b = b.scatter_add(1, match.gather(1, merged)[..., None].expand(-1, -1, width), moved)
        parts.append(torch.cat([a.gather(1, kept[..., None].expand(-1, -1, width)), b], dim=1))
    b_positions = 2 * torch.arange(body.shape[1] // 2, device=x.device) + 1
    positions = torch.cat([2 * kept, b_positions.expand(x.shape[0], -1)], dim=1)
    restore = positions.argsort(dim=1)[..., None]
    summed, sizes = (p.gather(1, restore.expand(-1, -1, p.shape[-1])) for p in parts)
    return torch.cat([head, summed / sizes], dim=1), torch.cat([size[:, :protected], sizes], dim=1)


def attend(attention: nn.Module, hidden: torch.Tensor,
           bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention module's output for `hidden` with `bias` added to its logits, and its
    keys averaged over heads (ToMe's similarity metric): DINOv2's and CLIP's projections run
    through one scaled-dot-product attention."""
    batch, tokens, _ = hidden.shape
    head_dim = attention.head_dim

    def heads(projection: nn.Linear) -> torch.Tensor:
        return projection(hidden).view(batch, tokens, -1, head_dim).transpose(1, 2)

    query, key, value = heads(attention.q_proj), heads(attention.k_proj), heads(attention.v_proj)
    scale = getattr(attention, "scaling", None) or attention.scale
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=scale)
    out = out.transpose(1, 2).reshape(batch, tokens, -1)
    output = attention.o_proj if hasattr(attention, "o_proj") else attention.out_proj
    return output(out), key.mean(dim=1)


def merging_block(layer: nn.Module, x: torch.Tensor, size: torch.Tensor | None, *, r: int,
                  family: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One tower block (inference: no drop path) with ToMe between attention and MLP."""
    if family == DINOV2:
        norm1, attention, scale1 = layer.norm1, layer.attention, layer.layer_scale1
        norm2, mlp, scale2 = layer.norm2, layer.mlp, layer.layer_scale2
    else:
        norm1, attention, norm2, mlp = layer.layer_norm1, layer.self_attn, layer.layer_norm2, \
            layer.mlp
        scale1 = scale2 = nn.Identity()
    bias = None if size is None else size.log().transpose(1, 2)[:, None]  # (batch, 1, 1, keys)
    attended, keys = attend(attention, norm1(x), bias)
    x = x + scale1(attended)
    if r > 0:
        size = size if size is not None else x.new_ones(x.shape[0], x.shape[1], 1)
        x, size = bipartite_merge(x, size, keys, r=r)
    return x + scale2(mlp(norm2(x))), size


class MergingTower(nn.Module):
    """A DINOv2 or CLIP vision tower run block by block with ToMe in its first
    `merging_layers` blocks; returns what the tower returns (every layer's hidden states,
    which a LLaVA indexes by `vision_feature_layer`)."""

    merges_tokens = True  # the other knobs refuse to reshape it: apply merging last

    def __init__(self, tower: nn.Module, *, r: int, merging_layers: int):
        super().__init__()
        self.tower, self.r, self.merging_layers = tower, r, merging_layers
        self.config = tower.config
        self.family = tower.config.model_type

    @property
    def dtype(self) -> torch.dtype:
        return self.tower.dtype

    @property
    def embeddings(self) -> nn.Module:
        """The tower's patch and position embeddings (what `tower.patch_embedding` reads)."""
        return self.tower.embeddings

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        tower = self.tower
        x = tower.embeddings(pixel_values.to(self.dtype))
        if self.family == CLIP:
            x = tower.pre_layrnorm(x)
        hidden, size = [x], None
        for index, layer in enumerate(tower.encoder.layer if self.family == DINOV2
                                      else tower.encoder.layers):
            r = self.r if index < self.merging_layers else 0
            x, size = merging_block(layer, x, size, r=r, family=self.family)
            hidden.append(x)
        if self.family == DINOV2:
            last = tower.layernorm(x)
            pooled = last[:, 0]
        else:
            last, pooled = x, tower.post_layernorm(x[:, 0])
        return BaseModelOutputWithPooling(last_hidden_state=last, pooler_output=pooled,
                                          hidden_states=tuple(hidden))


def tokens_after(tokens: int, *, r: int, layers: int, protected: int = 1) -> int | None:
    """Tokens left after `layers` blocks each merging r, or None when some block has fewer than
    2r mergeable tokens (ToMe merges at most half of them)."""
    for _ in range(layers):
        if r > (tokens - protected) // 2:
            return None
        tokens -= r
    return tokens


def merging_layers(model: LoadedModel, layers: int) -> int:
    """Blocks whose merging reaches what the model's output reads: a LLaVA's
    `vision_feature_layer` (hidden state k is block k's output; several layers: the first),
    every block for a bare tower."""
    if model.kind != VLM:
        return layers
    chosen = model.module.config.vision_feature_layer
    chosen = min(c % (layers + 1) for c in chosen) if isinstance(chosen, list) else chosen
    return chosen % (layers + 1)


def with_token_merging(model: LoadedModel, *, r: int) -> LoadedModel:
    """`model` whose vision tower merges `r` tokens in each block up to the layer its output
    reads (weights shared; the input model is left as it was). r=0 runs the same computation
    unmerged."""
    tower = vision_tower(model)
    family = tower_family(tower, knob="r")
    if getattr(tower, "merges_tokens", False):
        raise UserInputError(f"r: '{model.name}' already merges tokens; apply r once")
    if family not in (DINOV2, CLIP):
        raise UserInputError(f"r: token merging knows DINOv2 and CLIP towers, not '{family}' "
                             f"('{model.name}')")
    layers = tower.config.num_hidden_layers
    merging = merging_layers(model, layers)
    geometry = tower_geometry(model)
    left = tokens_after(geometry.tokens, r=max(r, 0), layers=merging)
    if r < 0 or left is None:
        largest = max(k for k in range(geometry.tokens)
                      if tokens_after(geometry.tokens, r=k, layers=merging) is not None)
        raise UserInputError(f"r={r} must be between 0 and {largest}: {merging} merging blocks "
                             f"on the tower's {geometry.tokens} tokens at {geometry.image_size} "
                             "pixels")
    merged = MergingTower(tower, r=r, merging_layers=merging)
    emitted = image_tokens(model, left) if model.kind == VLM else left
    return with_tower(model, merged, side=geometry.image_size, tokens=emitted,
                      setting={"tome_r": r})

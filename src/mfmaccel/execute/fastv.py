"""Image-token dropping inside a LLaVA's language model (FastV, ECCV 2024).

After decoder layer K has run, the image tokens are ranked by the attention they received in
layer K and only the top ceil(keep x n_image) stay; layers K+1.. run on the shorter sequence
(a real cut: their projections, MLPs and KV cache see fewer tokens), and the kept tokens keep
their original rotary positions. Text tokens are never dropped.

Ranking: the attention layer K's queries *after the image* (the question text) pay to each
image token, softmax-normalised per head as in the layer, averaged over heads and over those
queries. FastV's reference code reads only the last query; in our prompt format
(`<image>\\nQuestion: ...\\nAnswer:`) the last query is the same "Answer:" token for every
question, and the question's own tokens say which regions the question is about, so averaging
over them is the less noisy ranking for the same cost (a few query rows against the keys).

Design (transformers 5.x Llama/Qwen2): `LlamaModel` builds one attention mask and one (cos, sin)
for all its layers and loops over `self.layers`. So the copy returned here swaps that list for
one whose layer K ranks and cuts, and whose later layers receive the mask, (cos, sin) and
position ids narrowed to their own tokens: rows of the dropped queries go, and columns of the
dropped keys go, in this forward and in every later forward that continues from the cache
(layers <= K cache every token, later ones only the kept). The positions of image tokens come
from `input_ids` through a pre-hook on the copy's `LlavaModel`. Weights are shared with the
input model, which is left untouched.

Convention: `layer` is the 0-based index of the last layer that sees every token, so
`layer=K` runs K+1 full layers. FastV's paper counts "K layers" before the cut: its K=2 is our
layer=1. The prompt forward returns logits for the kept positions only (the last one, which is
what scoring and generation read, is always text).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from mfmaccel.errors import UserInputError
from mfmaccel.models.record import VLM, LoadedModel
from mfmaccel.models.views import shallow_copy
from mfmaccel.runtime.anatomy import decoder_body, decoder_layers


@dataclass
class _DropState:
    """What the wrapped layers share during and between forwards of one dropping copy."""

    layer: int
    keep: float
    image_token_id: int
    image_mask: torch.Tensor | None = None  # (B, q) image positions of the current forward
    column_keep: torch.Tensor | None = None  # (B, n) cached positions later layers kept
    cut_length: int = 0  # positions [0, cut_length) are described by column_keep
    narrowed: tuple | None = None  # (mask, (cos, sin), position_ids) for layers after K

    def see_inputs(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Pre-hook on the LlavaModel: note where this forward's image tokens are."""
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        found = None if input_ids is None else input_ids == self.image_token_id
        self.image_mask = found if found is not None and bool(found.any()) else None


def with_image_token_dropping(model: LoadedModel, *, layer: int, keep: float) -> LoadedModel:
    """A copy of a LLaVA-style VLM whose language model keeps only the top `keep` share of the
    image tokens after decoder layer `layer` (0-based); weights are shared with `model`."""
    if model.kind != VLM:
        raise UserInputError(f"image-token dropping needs a vision-language model; "
                             f"'{model.name}' is a {model.kind} model")
    blocks = decoder_layers(model.module)
    if not 0.0 < keep <= 1.0:
        raise UserInputError(f"image-token keep ratio {keep} is outside (0, 1]; "
                             "e.g. 0.5 keeps half the image tokens")
    if not 0 <= layer < len(blocks):
        raise UserInputError(f"image-token dropping layer {layer} is outside "
                             f"0..{len(blocks) - 1} ({model.name} has {len(blocks)} blocks)")
    if not _ranks_attention(blocks[layer]):
        raise UserInputError(f"image-token dropping knows Llama/Qwen2-style language models; "
                             f"{model.name}'s blocks are {type(blocks[layer]).__name__}")
    state = _DropState(layer=layer, keep=keep, image_token_id=model.module.config.image_token_id)
    module = _dropping_copy(model.module, blocks, state)
    meta = {**model.meta, "image_token_dropping": {"layer": layer, "keep": keep}}
    return dataclasses.replace(model, module=module, meta=meta)


def _dropping_copy(module: nn.Module, blocks: nn.ModuleList, state: _DropState) -> nn.Module:
    """Top module -> LlavaModel -> language model -> layer list, each a shallow copy, so the
    input model keeps its own layer list and hooks."""
    body = shallow_copy(decoder_body(module))
    wrapped = [_CutAfter(block, state) if i == state.layer
               else _AfterCut(block, state) if i > state.layer else block
               for i, block in enumerate(blocks)]
    body.layers = nn.ModuleList(wrapped)
    vlm = shallow_copy(module.model)
    vlm.language_model = body
    vlm.register_forward_pre_hook(state.see_inputs, with_kwargs=True)  # the copy's own table
    top = shallow_copy(module)
    top.model = vlm
    return top


class _Wrapped(nn.Module):
    """A decoder layer and the dropping state it shares with the other wrapped layers."""

    knob = "image-token dropping"  # what `execute.fusion` names when it meets this layer

    def __init__(self, block: nn.Module, state: _DropState):
        super().__init__()
        self.block = block
        self.state = state


class _CutAfter(_Wrapped):
    """Layer K: runs on every token, then ranks the image tokens and drops the rest."""

    def forward(self, hidden_states, attention_mask=None, position_embeddings=None,
                position_ids=None, **kwargs):
        state = self.state
        cache = kwargs.get("cache")
        past = cache.get_seq_length(state.layer) if cache is not None else 0
        if past == 0:
            state.column_keep, state.cut_length = None, 0
        out = self.block(hidden_states, attention_mask=attention_mask,
                         position_embeddings=position_embeddings, position_ids=position_ids,
                         **kwargs)
        rows = None
        if state.image_mask is not None:
            received = _received_attention(self.block, hidden_states, position_embeddings,
                                           attention_mask, state.image_mask, past=past)
            rows = _kept_rows(received, state.image_mask, state.keep)
            _record_cut(state, rows, past=past, length=hidden_states.shape[1])
            out = out.gather(1, rows[..., None].expand(-1, -1, out.shape[-1]))
        state.narrowed = _narrow(state, attention_mask, position_embeddings, position_ids, rows)
        return out


class _AfterCut(_Wrapped):
    """A layer after K: sees the kept tokens only, with the mask and positions narrowed."""

    def forward(self, hidden_states, attention_mask=None, position_embeddings=None,
                position_ids=None, **kwargs):
        mask, embeddings, positions = self.state.narrowed
        return self.block(hidden_states, attention_mask=mask, position_embeddings=embeddings,
                          position_ids=positions, **kwargs)


def _received_attention(block: nn.Module, hidden: torch.Tensor, position_embeddings: tuple,
                        mask: torch.Tensor | None, image_mask: torch.Tensor, *,
                        past: int) -> torch.Tensor:
    """(B, q): attention each position of this forward receives in `block`, averaged over
    heads and over the queries after the last image token (the last query if there are none).
    Keys of an earlier forward are left out of the softmax (the image arrives in this one)."""
    attn = block.self_attn
    batch, length, _ = hidden.shape
    positions = torch.arange(length, device=hidden.device)
    last_image = torch.where(image_mask, positions, -1).amax(1)  # (B,)
    start = min(int(last_image.min()) + 1, length - 1)
    queries, keys = _rotated_queries_keys(block, hidden, position_embeddings, start=start)
    keys = repeat_kv(keys, attn.num_key_value_groups)
    scores = (queries @ keys.transpose(2, 3)).float() * attn.scaling  # (B, H, r, q)
    visible = _visible(mask, start=start, past=past, length=length, device=hidden.device)
    probs = scores.masked_fill(~visible, float("-inf")).softmax(-1).mean(1)  # (B, r, q)
    after = positions[start:][None, :] > last_image[:, None]  # (B, r)
    after[:, -1] |= ~after.any(1)  # no text after the image: the last query alone
    weights = after.float() / after.sum(1, keepdim=True)
    return (weights[..., None] * probs).sum(1)


def _ranks_attention(block: nn.Module) -> bool:
    """Whether `block` exposes what the ranking reads: transformers' q/k projections, or a
    fused block's one q/k/v product (`fusion_blocks.FusedAttention.rotated_qkv`)."""
    attn = getattr(block, "self_attn", None)
    return hasattr(attn, "q_proj") or hasattr(attn, "rotated_qkv")


def _rotated_queries_keys(block: nn.Module, hidden: torch.Tensor, position_embeddings: tuple,
                          *, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer K's rotated queries from position `start` on and keys of every position, as
    (B, heads, tokens, head_dim). A fused block computes q, k and v in its one product."""
    attn = block.self_attn
    normed = block.input_layernorm(hidden)
    cos, sin = position_embeddings
    if not hasattr(attn, "q_proj"):
        queries, keys, _ = attn.rotated_qkv(normed, cos, sin)
        return queries[:, :, start:], keys
    batch, length, _ = hidden.shape
    queries = attn.q_proj(normed[:, start:]).view(batch, length - start, -1, attn.head_dim)
    keys = attn.k_proj(normed).view(batch, length, -1, attn.head_dim)
    queries = apply_rotary_pos_emb(queries.transpose(1, 2), queries.transpose(1, 2),
                                   cos[:, start:], sin[:, start:])[0]
    keys = apply_rotary_pos_emb(keys.transpose(1, 2), keys.transpose(1, 2), cos, sin)[0]
    return queries, keys


def _visible(mask: torch.Tensor | None, *, start: int, past: int, length: int,
             device: torch.device) -> torch.Tensor:
    """Which of this forward's keys each query from `start` on may see: the model's own mask
    (bool for SDPA, additive for eager) when it built one, else plain causal."""
    if mask is None:
        rows = torch.arange(start, length, device=device)[:, None]
        return (torch.arange(length, device=device)[None, :] <= rows)[None, None]
    mask = mask[:, :, start:, past:past + length]
    return mask if mask.dtype == torch.bool else mask == 0


def _kept_rows(received: torch.Tensor, image_mask: torch.Tensor, keep: float) -> torch.Tensor:
    """(B, n) positions that go on, ascending: every text token and the image tokens that
    received the most attention."""
    counts = image_mask.sum(1)
    if bool((counts != counts[0]).any()):
        raise ValueError("image-token dropping needs the same number of image tokens per row")
    n_keep = math.ceil(round(keep * int(counts[0]), 9))
    ranked = received.masked_fill(~image_mask, float("-inf")).topk(n_keep, dim=1).indices
    kept = (~image_mask).scatter(1, ranked, True)
    positions = torch.arange(kept.shape[1], device=kept.device).expand_as(kept)
    return positions[kept].view(kept.shape[0], -1)


def _record_cut(state: _DropState, rows: torch.Tensor, *, past: int, length: int) -> None:
    """Extend the kept-column list over the cache's earlier positions, then add this cut."""
    earlier = _columns(state, past, batch=rows.shape[0], device=rows.device)
    state.column_keep = torch.cat([earlier, rows + past], dim=1)
    state.cut_length = past + length


def _columns(state: _DropState, total: int, *, batch: int,
             device: torch.device) -> torch.Tensor:
    """(batch, c) key positions in [0, total) that the layers after K hold in their cache."""
    tail = torch.arange(state.cut_length, total, device=device).expand(batch, -1)
    if state.column_keep is None:
        return tail
    kept = state.column_keep
    if kept.shape[0] != batch:
        if batch % kept.shape[0]:
            raise ValueError(f"image-token dropping cannot follow a cache from batch "
                             f"{kept.shape[0]} to {batch}")
        kept = kept.repeat_interleave(batch // kept.shape[0], dim=0)
    return torch.cat([kept, tail], dim=1)


def _narrow(state: _DropState, mask: torch.Tensor | None, position_embeddings: tuple,
            position_ids: torch.Tensor | None, rows: torch.Tensor | None) -> tuple:
    """Mask, (cos, sin) and position ids as the layers after K see them this forward."""
    if rows is not None:
        batch = rows.shape[0]
        position_embeddings = tuple(_take_rows(t.expand(batch, *t.shape[1:]), rows)
                                    for t in position_embeddings)
        if position_ids is not None:
            position_ids = position_ids.expand(batch, -1).gather(1, rows)
        if mask is not None:
            mask = mask.expand(batch, *mask.shape[1:])
            mask = mask.gather(2, rows[:, None, :, None].expand(-1, mask.shape[1], -1,
                                                                mask.shape[-1]))
    if mask is not None and state.column_keep is not None:
        columns = _columns(state, mask.shape[-1], batch=mask.shape[0], device=mask.device)
        mask = mask.gather(3, columns[:, None, None, :].expand(-1, mask.shape[1],
                                                               mask.shape[2], -1))
    return mask, position_embeddings, position_ids


def _take_rows(tensor: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """tensor[b, rows[b]] for a (B, q, ...) tensor."""
    index = rows.view(*rows.shape, *([1] * (tensor.dim() - 2)))
    return tensor.gather(1, index.expand(-1, -1, *tensor.shape[2:]))

"""Structural pruning: remove whole transformer blocks, MLP intermediate channels and
attention heads (whole grouped-query groups), so the model really gets smaller and faster:
its config changes and it saves and reloads with transformers like any other checkpoint.

Importance comes from calibration text:
- a block matters as much as it changes its input (1 - cosine similarity of the hidden states
  entering and leaving it, averaged over tokens; ShortGPT's block influence);
- an MLP channel by mean |activation| entering `down_proj` times the norm of its `down_proj`
  column (what removing it takes away from the block's output, Wanda-style);
- a key/value group by the output norm its query heads contribute through `o_proj`.
Widths are pruned by the same amount in every block, since a transformers config holds one
`intermediate_size` and one head count for all layers; the slicing is a few `index_select`s on
named projections, so we do it directly rather than trace a dependency graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from mfmaccel.compress.blocks import capture_blocks, run_blocks
from mfmaccel.errors import UserInputError
from mfmaccel.models.record import LoadedModel
from mfmaccel.progress import counter
from mfmaccel.records import Record
from mfmaccel.runtime.anatomy import decoder_layers

MLP = ("gate_proj", "up_proj", "down_proj")
Tick = Callable[[], None]  # one more calibration pass done (for progress)
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class PruneReport(Record):
    removed_blocks: list[int] = field(default_factory=list)
    block_importance: list[float] = field(default_factory=list)
    intermediate_size: tuple[int, int] = (0, 0)  # before, after
    kv_heads: tuple[int, int] = (0, 0)
    params: tuple[int, int] = (0, 0)
    recovery: dict = field(default_factory=dict)  # RecoveryReport, when recovery ran


def text_config(module: nn.Module):
    return module.config.get_text_config()


def _hidden(out):
    return out[0] if isinstance(out, tuple) else out


@torch.inference_mode()
def block_importance(module: nn.Module, batches: Sequence[torch.Tensor],
                     tick: Tick | None = None) -> list[float]:
    """1 - mean cosine(input, output) of each block on the calibration batches; `tick` after
    each block."""
    cache = capture_blocks(module, list(batches))
    layers = decoder_layers(module)
    scores = []
    for index, layer in enumerate(layers):
        total, count = 0.0, 0
        for batch, hidden in enumerate(cache.inputs[index]):
            out = _hidden(layer(hidden, **cache.kwargs[index][batch]))
            cos = nn.functional.cosine_similarity(hidden.float(), out.float(), dim=-1)
            total += float((1 - cos).sum())
            count += cos.numel()
        scores.append(total / count)
        if tick:
            tick()
    return scores


def remove_blocks(module: nn.Module, indices: Sequence[int]) -> None:
    """Delete blocks and renumber the rest (cache slots, config layer lists)."""
    layers = decoder_layers(module)
    drop = set(indices)
    if len(drop) >= len(layers):
        raise UserInputError(f"cannot remove {len(drop)} of {len(layers)} blocks; keep at least 1")
    kept = [layer for i, layer in enumerate(layers) if i not in drop]
    layers.__init__(kept)  # same ModuleList object, new contents
    config = text_config(module)
    for new_index, layer in enumerate(kept):
        attention = getattr(layer, "self_attn", None) or getattr(layer, "attn", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = new_index
        if hasattr(layer, "layer_idx"):
            layer.layer_idx = new_index
    for key in ("layer_types",):
        values = getattr(config, key, None)
        if isinstance(values, list) and len(values) == len(kept) + len(drop):
            setattr(config, key, [v for i, v in enumerate(values) if i not in drop])
    config.num_hidden_layers = len(kept)


def _require(layer: nn.Module, names: tuple[str, ...], where: str) -> None:
    owner = layer.mlp if where == "mlp" else layer.self_attn
    if not all(isinstance(getattr(owner, n, None), nn.Linear) for n in names):
        raise UserInputError(
            f"{type(layer).__name__}: {where} pruning needs separate {', '.join(names)} "
            "projections (Llama, Qwen2, Gemma3 style); prune blocks only for this model"
        )


def _slice_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear with only the `keep` rows (dim 0: outputs) or columns (dim 1: inputs)."""
    weight = linear.weight.detach().index_select(dim, keep)
    bias = linear.bias
    if bias is not None and dim == 0:
        bias = bias.detach().index_select(0, keep)
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                    dtype=weight.dtype)
    new.weight.data.copy_(weight)
    if bias is not None:
        new.bias.data.copy_(bias.detach())
    return new


@torch.inference_mode()
def _channel_statistics(module: nn.Module, batches, attr: str, name: str,
                        tick: Tick | None = None) -> list[torch.Tensor]:
    """Mean |input| per input feature of `<attr>.<name>` in every block; `tick` per batch."""
    layers = decoder_layers(module)
    sums = [None] * len(layers)
    counts = [0] * len(layers)

    def hook(index):
        def record(_, args):
            x = args[0].reshape(-1, args[0].shape[-1]).abs().float()
            sums[index] = x.sum(0) if sums[index] is None else sums[index] + x.sum(0)
            counts[index] += x.shape[0]
        return record

    handles = [getattr(getattr(layer, attr), name).register_forward_pre_hook(hook(i))
               for i, layer in enumerate(layers)]
    try:
        cache = capture_blocks(module, list(batches))
        for batch in range(len(batches)):
            run_blocks(module, cache, 0, batch)
            if tick:
                tick()
    finally:
        for handle in handles:
            handle.remove()
    return [s / c for s, c in zip(sums, counts, strict=True)]


def prune_mlp(module: nn.Module, batches, fraction: float,
              tick: Tick | None = None) -> tuple[int, int]:
    """Remove `fraction` of every block's MLP channels (least important first)."""
    layers = decoder_layers(module)
    for layer in layers:
        _require(layer, MLP, "mlp")
    before = layers[0].mlp.down_proj.in_features
    keep_count = max(1, round(before * (1 - fraction)))
    activity = _channel_statistics(module, batches, "mlp", "down_proj", tick)
    for layer, act in zip(layers, activity, strict=True):
        mlp = layer.mlp
        score = act * mlp.down_proj.weight.detach().float().norm(dim=0)
        keep = score.topk(keep_count).indices.sort().values
        mlp.gate_proj = _slice_linear(mlp.gate_proj, keep, 0)
        mlp.up_proj = _slice_linear(mlp.up_proj, keep, 0)
        mlp.down_proj = _slice_linear(mlp.down_proj, keep, 1)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = keep_count
    text_config(module).intermediate_size = keep_count
    return before, keep_count


def prune_kv_groups(module: nn.Module, batches, groups_to_remove: int,
                    tick: Tick | None = None) -> tuple[int, int]:
    """Remove whole key/value groups (with all their query heads) from every block."""
    layers = decoder_layers(module)
    config = text_config(module)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    if groups_to_remove <= 0:
        return kv_heads, kv_heads
    if groups_to_remove >= kv_heads:
        raise UserInputError(f"cannot remove {groups_to_remove} of {kv_heads} key/value groups")
    for layer in layers:
        _require(layer, ATTENTION, "attention")
    per_group = heads // kv_heads
    activity = _channel_statistics(module, batches, "self_attn", "o_proj", tick)
    for layer, act in zip(layers, activity, strict=True):
        attention = layer.self_attn
        column = attention.o_proj.weight.detach().float().norm(dim=0)
        head_score = (act * column).view(heads, head_dim).sum(-1)
        group_score = head_score.view(kv_heads, per_group).sum(-1)
        keep_groups = group_score.topk(kv_heads - groups_to_remove).indices.sort().values
        keep_heads = (keep_groups[:, None] * per_group + torch.arange(per_group)).flatten()
        q_rows = (keep_heads[:, None] * head_dim + torch.arange(head_dim)).flatten()
        kv_rows = (keep_groups[:, None] * head_dim + torch.arange(head_dim)).flatten()
        attention.q_proj = _slice_linear(attention.q_proj, q_rows, 0)
        attention.k_proj = _slice_linear(attention.k_proj, kv_rows, 0)
        attention.v_proj = _slice_linear(attention.v_proj, kv_rows, 0)
        attention.o_proj = _slice_linear(attention.o_proj, q_rows, 1)
        for attr, value in (("num_heads", len(keep_heads)), ("num_key_value_heads",
                                                              len(keep_groups))):
            if hasattr(attention, attr):
                setattr(attention, attr, value)
    config.head_dim = head_dim  # explicit: hidden_size / heads no longer gives it
    config.num_attention_heads = (kv_heads - groups_to_remove) * per_group
    config.num_key_value_heads = kv_heads - groups_to_remove
    return kv_heads, config.num_key_value_heads


def prune_model(
    model: LoadedModel, batches: Sequence[torch.Tensor], *, blocks: int = 0,
    mlp_fraction: float = 0.0, kv_groups: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[LoadedModel, PruneReport]:
    """Remove the `blocks` least important blocks, then `mlp_fraction` of MLP channels and
    `kv_groups` key/value groups in each remaining block. In place. `progress(done, total)`
    counts the calibration passes: one per block to rank blocks, one per batch per width."""
    if not 0 <= mlp_fraction < 1:
        raise UserInputError(f"mlp fraction must be in [0, 1), got {mlp_fraction}")
    module = model.module
    report = PruneReport()
    before_params = model.params
    total = (len(decoder_layers(module)) if blocks else 0) + len(batches) * (
        bool(mlp_fraction) + bool(kv_groups))
    tick = counter(progress, total)

    if blocks:
        scores = block_importance(module, batches, tick)
        report.block_importance = scores
        report.removed_blocks = sorted(sorted(range(len(scores)), key=scores.__getitem__)[:blocks])
        remove_blocks(module, report.removed_blocks)
    if mlp_fraction:
        report.intermediate_size = prune_mlp(module, batches, mlp_fraction, tick)
    if kv_groups:
        report.kv_heads = prune_kv_groups(module, batches, kv_groups, tick)
    report.params = (before_params, model.params)
    model.meta["pruning"] = report.to_dict()
    return model, report

"""Whether a checkpoint holds exactly the tensors its config builds, checked before loading.

Why: transformers fills a weight the file lacks with random values and drops one it does not
expect, with at most a log line; a renamed tensor or a `num_hidden_layers` that disagrees with
the weights then gives a model that runs and is wrong. Here the model is built on the meta
device (shapes only, no memory, about 0.1 s) and its state dict is compared with the
safetensors headers, with the key renames transformers applies on loading (legacy prefixes,
`gamma`/`beta`, the base-model prefix), tied weights and buffers it recomputes taken into
account.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.models.header import TensorEntry

SHOWN = 3  # names listed per kind of fault; the rest are counted
STEP_COUNTER = "num_batches_tracked"
OLD_CONSTANTS = re.compile(r"(^|\.)(masked_bias|inv_freq|position_ids)$")


@dataclass
class Mismatch:
    """What keeps a checkpoint from filling a model exactly."""

    missing: list[str] = field(default_factory=list)  # the model's names
    unexpected: list[str] = field(default_factory=list)  # the file's names
    misshaped: list[str] = field(default_factory=list)  # "name (file shape vs config shape)"

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.misshaped)


def meta_module(config, auto_class) -> torch.nn.Module:
    """The model `config` describes, on the meta device: names and shapes, no weights."""
    try:
        with torch.device("meta"):
            return auto_class.from_config(config)
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError, IndexError) as err:
        raise UserInputError(f"transformers cannot build the model config.json describes "
                             f"({first_line(err)}); fix config.json") from None


def first_line(err: BaseException) -> str:
    """An exception's message in one line, for a `UserInputError` that wraps it."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def compare(module: torch.nn.Module, tensors: dict[str, TensorEntry]) -> Mismatch:
    """Match the file's tensors to `module`'s state dict the way `from_pretrained` does."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import (
        WeightConverter,
        WeightRenaming,
        dot_natural_key,
        rename_source_key,
    )

    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    mapping = get_model_conversion_mapping(module)
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if isinstance(m, WeightConverter)]
    targets = {p: c.target_patterns for c in converters for p in c.source_patterns}
    prefix = module.base_model_prefix
    found, result = set(), Mismatch()
    for key in sorted(tensors, key=dot_natural_key):
        name, pattern = rename_source_key(key, renamings, converters, prefix, expected)
        if name not in expected and key in expected:
            name, pattern = rename_source_key(key, [], [], prefix, expected)
        if name not in expected:
            result.unexpected.append(key)
        elif pattern is not None:  # a converter (fused or split weights) changes the shapes
            first, *others = targets[pattern]
            found.update([name, *(name.replace(first, other) for other in others)])
        else:
            found.add(name)
            if tensors[key].shape != expected[name]:
                result.misshaped.append(f"{key} ({_shape(tensors[key].shape)} in the file, "
                                        f"{_shape(expected[name])} for the config)")
    result.missing = sorted(_unfilled(module, set(expected) - found, found))
    result.unexpected = _not_ignored(module, result.unexpected)
    return result


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _unfilled(module: torch.nn.Module, missing: set[str], found: set[str]) -> set[str]:
    """Missing tensors that nothing fills: a tied weight whose partner is in the file is filled
    by tying, and a batch norm's step counter only counts training steps. Non-persistent
    buffers (rotary tables, position ids) are not in the state dict at all; persistent ones,
    such as batch-norm statistics, are learned and must be in the file."""
    ties = getattr(module, "all_tied_weights_keys", None) or {}
    filled = {a for pair in ties.items() for a, b in (pair, pair[::-1]) if b in found}
    left = {name for name in missing - filled if not name.endswith(STEP_COUNTER)}
    info = SimpleNamespace(missing_keys=left, unexpected_keys=set())
    module._adjust_missing_and_unexpected_keys(info)  # the model's own ignore patterns
    return info.missing_keys


def _not_ignored(module: torch.nn.Module, unexpected: list[str]) -> list[str]:
    """Unexpected keys transformers drops knowingly are fine: the model's own ignore list, and
    constants older versions saved as persistent buffers (GPT-2's `masked_bias`, rotary
    `inv_freq`, `position_ids`)."""
    info = SimpleNamespace(missing_keys=set(), unexpected_keys=set(unexpected))
    module._adjust_missing_and_unexpected_keys(info)
    return [key for key in unexpected
            if key in info.unexpected_keys and not OLD_CONSTANTS.search(key)]


def check_tensors_match(folder: Path, module: torch.nn.Module,
                        tensors: dict[str, TensorEntry]) -> None:
    """Refuse a checkpoint whose tensors are not exactly the ones `module`'s config needs."""
    mismatch = compare(module, tensors)
    if not mismatch:
        return
    parts = [_listed(label, names) for label, names in (
        ("missing", mismatch.missing), ("unexpected", mismatch.unexpected),
        ("mis-shaped", mismatch.misshaped)) if names]
    raise UserInputError(
        f"{folder}: the weights do not match config.json: {'; '.join(parts)}; re-save the "
        "checkpoint, or fix config.json (num_hidden_layers, hidden_size, ...) to the weights"
    )


def _listed(label: str, names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return f"{len(names)} {label} ({shown}{more})"


"""LoRA on the language model's attention and MLP projections (peft), and nothing else.

The regex keeps the vision tower out even when it uses the same layer names (CLIP's q_proj).
After training the adapter is merged, so the model stays a plain transformers LLaVA; the
adapter's own tensors are kept for `weights/medvlm/` (a few MB instead of the whole LM).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from peft.utils import get_peft_model_state_dict

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_config(rank: int, alpha: float, targets: tuple[str, ...] = LORA_TARGETS) -> LoraConfig:
    """Adapters on a LLaVA language model's `targets` projections (never its vision tower)."""
    pattern = r".*language_model\..*\.(" + "|".join(targets) + r")$"
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=pattern,
                      bias="none")


def lora_config_for(modules: Sequence[str], rank: int, alpha: float, *,
                    fan_in_fan_out: bool = False) -> LoraConfig:
    """Adapters on exactly the named modules (full paths, as `named_modules()` gives them),
    for a model whose projection names follow no convention we know in advance.
    `fan_in_fan_out` for GPT-2's Conv1D, which stores its weight transposed."""
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(modules),
                      fan_in_fan_out=fan_in_fan_out, bias="none")


def add_lora(module: torch.nn.Module, config: LoraConfig) -> PeftModel:
    """Wrap `module` with fresh LoRA adapters (B = 0, so the outputs are unchanged); the layers
    are injected into `module` in place, so calling `module` itself runs them too."""
    with warnings.catch_warnings():  # peft calls a transformers property deprecated in v5
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(module, config)


def lora_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for name, p in module.named_parameters() if "lora_" in name]


def lora_state(peft_model: PeftModel) -> dict[str, torch.Tensor]:
    """The adapter tensors alone, detached, on the CPU."""
    state = get_peft_model_state_dict(peft_model)
    return {key: value.detach().cpu().clone() for key, value in state.items()}


def merge_lora(peft_model: PeftModel) -> torch.nn.Module:
    """Fold the adapter into the weights and return the plain module."""
    return peft_model.merge_and_unload()


def apply_lora(
    module: torch.nn.Module, config: LoraConfig, state: dict[str, torch.Tensor]
) -> torch.nn.Module:
    """`module` with a saved adapter loaded and merged in."""
    peft_model = add_lora(module, config)
    result = set_peft_model_state_dict(peft_model, state)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise ValueError(f"adapter does not fit the model: missing {missing[:3]}, "
                         f"unexpected {list(result.unexpected_keys)[:3]}")
    return merge_lora(peft_model)

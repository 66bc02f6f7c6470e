"""Recovery after pruning: a short LoRA fine-tune that teaches the pruned model to imitate the
model before pruning (KL divergence to its next-token distribution on calibration text), then
merged back, so the result is again a plain, smaller transformers model.

Why distillation from the unpruned model rather than the plain language-modelling loss: the
teacher's full distribution carries more signal per token, and the student cannot learn what the
unpruned model did not know, so the perplexity it regains is recovery from pruning, not
adaptation to the text the evaluation happens to use.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mfmaccel.compress.calibration import calibration_batches
from mfmaccel.compress.prune import PruneReport, prune_model
from mfmaccel.errors import UserInputError
from mfmaccel.finetune.loop import train
from mfmaccel.models.lora import add_lora, lora_config_for, lora_parameters, merge_lora
from mfmaccel.models.record import CAUSAL_LM, VLM, LoadedModel
from mfmaccel.records import Record
from mfmaccel.runtime.anatomy import decoder_layers, linear_layers

RECOVER_WINDOW = 256  # tokens per recovery sequence


@dataclass
class RecoveryReport(Record):
    steps: int
    rank: int
    lr: float
    tokens_per_step: int
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of KL(teacher || student) between next-token distributions."""
    vocab = student_logits.shape[-1]
    student = F.log_softmax(student_logits.float().reshape(-1, vocab), -1)
    teacher = F.log_softmax(teacher_logits.float().reshape(-1, vocab), -1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean")


def recovery_targets(model: LoadedModel) -> list[str]:
    """The full names of the linear-like layers inside the language model's blocks (Llama's
    q_proj..down_proj, GPT-2's Conv1D c_attn/c_proj/c_fc, whatever a family calls them):
    where the adapters go. The head, the embeddings and a VLM's vision tower stay frozen."""
    try:
        blocks = decoder_layers(model.module)
    except ValueError:
        blocks = None
    names = {id(m): name for name, m in model.module.named_modules()}
    targets = [names[id(linear)] for block in blocks or []
               for linear in linear_layers(block).values()]
    if not targets:
        raise UserInputError(f"cannot recover '{model.name}': no linear layers found in its "
                             "transformer blocks; prune without --recover-steps")
    return targets


def recover(
    model: LoadedModel, teacher: nn.Module, batches: Sequence[torch.Tensor], *, steps: int = 60,
    rank: int = 8, lr: float = 5e-4, batch_size: int = 2, seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> RecoveryReport:
    """LoRA-distil `teacher` into the pruned `model` for `steps` steps; merged in place."""
    if steps < 1:
        raise UserInputError(f"recovery needs at least one step, got {steps}")
    if not batches:
        raise UserInputError("recovery needs calibration text")
    teacher.eval()
    targets = recovery_targets(model)
    conv1d = any(type(model.module.get_submodule(t)).__name__ == "Conv1D" for t in targets)
    peft_model = add_lora(model.module, lora_config_for(targets, rank, 2 * rank,
                                                         fan_in_fan_out=conv1d))

    def step_loss(indices: list[int]) -> torch.Tensor:
        ids = torch.cat([batches[i] for i in indices])
        with torch.no_grad():
            target = teacher(input_ids=ids).logits
        return distillation_loss(model.module(input_ids=ids).logits, target)

    model.module.train()
    result = train(step_loss, [{"params": lora_parameters(model.module), "lr": lr}],
                   count=len(batches), batch_size=batch_size, steps=steps, seed=seed,
                   progress=progress)
    model.module = merge_lora(peft_model).eval()
    tokens = batch_size * batches[0].shape[1]
    return RecoveryReport(steps, rank, lr, tokens, result.seconds, result.losses)


def require_prunable(model: LoadedModel) -> None:
    """Pruning takes a causal LM or the language model inside a LLaVA VLM (its blocks, MLP
    channels and key/value groups; the vision tower and projector stay as they are)."""
    if model.kind not in (CAUSAL_LM, VLM):
        raise UserInputError(f"pruning needs a causal LM or a LLaVA VLM; '{model.name}' is a "
                             f"{model.kind} model (try smollm2-135m or medvlm)")


def prune_and_recover(
    model: LoadedModel, *, calib_tokens: int = 2048, blocks: int = 0, mlp_fraction: float = 0.0,
    kv_groups: int = 0, recover_steps: int = 0, recover_tokens: int = 32768,
    progress: Callable[[int, int], None] | None = None,
    prune_progress: Callable[[int, int], None] | None = None,
) -> tuple[LoadedModel, PruneReport]:
    """Prune by importance on calibration text, then (if `recover_steps`) distil the unpruned
    model back into the pruned one; the report carries the recovery's loss curve.
    `prune_progress` follows the pruning's calibration passes, `progress` the recovery."""

    require_prunable(model)
    if recover_steps:
        recovery_targets(model)  # refuse a family we cannot adapt before any compute
    teacher = copy.deepcopy(model.module) if recover_steps else None
    batches = calibration_batches(model.tokenizer, calib_tokens, positions=model.context_length)
    model, report = prune_model(model, batches, blocks=blocks, mlp_fraction=mlp_fraction,
                                kv_groups=kv_groups, progress=prune_progress)
    if teacher is not None:
        text = calibration_batches(model.tokenizer, recover_tokens, window=RECOVER_WINDOW,
                                   positions=model.context_length)
        report.recovery = recover(model, teacher, text, steps=recover_steps,
                                  progress=progress).to_dict()
        model.meta["pruning"] = report.to_dict()
    return model, report

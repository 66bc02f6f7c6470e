"""Layer 1 of the method, model development: domain adaptation of a LLaVA-style VLM in three
phases (alignment, instruction tuning with LoRA, downstream VQA), plain PyTorch + peft."""

from mfmaccel.finetune.config import FinetuneConfig, PhaseConfig, WarmupConfig, load_config
from mfmaccel.finetune.main import main_finetune
from mfmaccel.finetune.run import FinetuneRecord, PhaseRecord, finetune_medvlm, finetune_model

__all__ = [
    "FinetuneConfig", "FinetuneRecord", "PhaseConfig", "PhaseRecord", "WarmupConfig",
    "finetune_medvlm", "finetune_model", "load_config", "main_finetune",
]

"""A model known by its Hugging Face config alone, traced on the `meta` device: shapes
propagate, nothing is computed and no weights are read, so a 70B config costs no memory.

This is how `hw simulate` and `hw dse` read the public configs (`roberta-base`, `vit-base`),
a folder holding only a config.json, and a folder whose architecture the model loader does not
load (DeiT, say): the accelerator sees shapes, and a float model's shapes are its config's.
Decoders get their language-model head (logits for the last position, as in a loaded model),
encoders and vision encoders their base model, LLaVA-style models the vision tower, the
projector and the language model on the image tokens plus `seq_len` text tokens.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.hw.ops import Workload
from mfmaccel.hw.workload import check_length, checked_side, describe, no_images
from mfmaccel.hw.workload import trace_module as trace
from mfmaccel.models.record import CAUSAL_LM, VLM

TRACEABLE = "decoders, encoders, vision encoders (ViT, DeiT) and LLaVA"


def roberta_base_config():
    """RoBERTa-base from its public config.json (no weights needed for a workload)."""
    from transformers import RobertaConfig

    return RobertaConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=12,
                         num_attention_heads=12, intermediate_size=3072,
                         max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                         pad_token_id=1, bos_token_id=0, eos_token_id=2)


def vit_base_config():
    """ViT-B/16 at 224 pixels (google/vit-base-patch16-224's public config)."""
    from transformers import ViTConfig

    return ViTConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072, image_size=224, patch_size=16, num_channels=3)


CONFIG_ONLY = {"roberta-base": roberta_base_config, "vit-base": vit_base_config}


def config_folder(spec: str):
    """The config of a folder whose weights are not needed, else None: a folder with a
    config.json and no .safetensors, or one whose architecture the loader refuses."""
    folder = Path(spec).expanduser()
    if not (folder / "config.json").is_file():
        return None
    config = read_config(folder)
    if not any(folder.glob("*.safetensors")):
        return config
    from mfmaccel.models.hf import classify_config

    try:
        classify_config(config, folder)
    except UserInputError:
        return config  # weights the loader does not read; the config has every shape
    return None


def read_config(folder: Path):
    """`folder`'s config.json as a transformers config; never runs code from the folder."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"{folder / 'config.json'}: not a transformers config ({reason}); "
                             f"hw simulate reads {TRACEABLE}") from None


def workload_for_config(config, seq_len: int, model: str, image_side: int | None = None,
                        batch: int = 1) -> Workload:
    """The workload of `config`'s model at `seq_len` tokens (a vision encoder: one image of
    `image_side` pixels, default its own); an architecture that cannot be traced on the meta
    device is refused in one line naming it."""
    family = getattr(config, "model_type", "") or type(config).__name__
    try:
        return _trace_config(config, seq_len, model, image_side, batch)
    except UserInputError:
        raise
    except Exception as err:  # any failure of transformers on meta gets the same one line
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise UserInputError(
            f"{model}: cannot trace architecture '{family}' on the meta device "
            f"({type(err).__name__}: {reason}); hw simulate reads {TRACEABLE}") from None


def _trace_config(config, seq_len: int, model: str, image_side: int | None,
                  batch: int) -> Workload:
    if hasattr(config, "vision_config") and hasattr(config, "text_config"):
        return _trace_vlm(config, seq_len, model, image_side, batch)
    module = _meta_module(config, model)
    entry = module.main_input_name
    if entry == "pixel_values":
        return _trace_vision(config, module, model, image_side, batch)
    if entry != "input_ids":
        raise UserInputError(f"{model}: architecture '{config.model_type}' reads {entry}, not "
                             f"token ids or pixels; hw simulate reads {TRACEABLE}")
    no_images(image_side, model)
    check_length(seq_len, _positions(config), model)
    inputs = {"input_ids": torch.zeros(batch, seq_len, dtype=torch.long, device="meta")}
    if _kind(config, model) == CAUSAL_LM:
        inputs["logits_to_keep"] = 1
    return trace(module, inputs, model, describe(inputs))


def _trace_vision(config, module, model: str, image_side: int | None, batch: int) -> Workload:
    """One image; a side other than the config's rebuilds the model at that side (its
    position embeddings are sized by it)."""
    own = getattr(config, "image_size", None) or 224
    side = checked_side(image_side or own, getattr(config, "patch_size", 1), model)
    if side != own and hasattr(config, "image_size"):
        config.image_size = side
        module = _meta_module(config, model)
    channels = getattr(config, "num_channels", 3)
    inputs = {"pixel_values": torch.zeros(batch, channels, side, side, device="meta")}
    return trace(module, inputs, model, describe(inputs))


def _trace_vlm(config, seq_len: int, model: str, image_side: int | None,
               batch: int) -> Workload:
    """The image's features, then the language model on them plus `seq_len` text tokens.
    LLaVA's own forward counts its placeholder tokens, which a meta tensor cannot."""
    vision = config.vision_config
    if image_side not in (None, vision.image_size):
        raise UserInputError(f"{model} takes {vision.image_size}-pixel images (its image tokens "
                             f"are fixed); leave the image size unset")
    check_length(seq_len, _positions(config.text_config), model)
    module = _meta_module(config, model)
    pixels = torch.zeros(batch, vision.num_channels, vision.image_size, vision.image_size,
                         device="meta")
    positions: list[int] = []

    def forward() -> None:
        features = _image_features(module, config, pixels)
        text = module.get_input_embeddings()(
            torch.zeros(batch, seq_len, dtype=torch.long, device="meta"))
        embeds = torch.cat([features.to(text.dtype), text], dim=1)
        positions.append(embeds.shape[1])
        module(inputs_embeds=embeds, logits_to_keep=1)

    workload = trace(module, {}, model, "", forward=forward)
    ids = f"input_ids {(batch, positions[0])}"
    return replace(workload, description=f"pixel_values {tuple(pixels.shape)}, {ids}")


def _image_features(module, config, pixels: torch.Tensor) -> torch.Tensor:
    """(batch, image tokens, hidden) from the tower and projector, as the model computes them."""
    out = module.get_image_features(
        pixel_values=pixels, vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=config.vision_feature_select_strategy)
    features = getattr(out, "pooler_output", out)
    if isinstance(features, (list, tuple)):
        features = torch.stack(list(features))
    return features if features.dim() == 3 else features.unsqueeze(0)


def _meta_module(config, model: str) -> torch.nn.Module:
    """The model `config` describes, on the meta device, with eager attention (whose products
    the tracer sees one by one)."""
    import transformers as tf

    auto = {VLM: tf.AutoModelForImageTextToText, CAUSAL_LM: tf.AutoModelForCausalLM}.get(
        _kind(config, model), tf.AutoModel)
    with torch.device("meta"):
        module = auto.from_config(config, attn_implementation="eager")
    return module.eval()


def _kind(config, model: str) -> str | None:
    """The loader's kind for a config it knows (a causal LM gets its head), else None."""
    from mfmaccel.models.hf import classify_config

    try:
        return classify_config(config, Path(model))
    except UserInputError:
        return None


def _positions(config) -> int | None:
    """Positions a config allows; RoBERTa's start after the padding index."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit and getattr(config, "model_type", "") == "roberta":
        limit -= config.pad_token_id + 1
    return limit

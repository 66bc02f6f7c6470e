"""`medvlm`: the project's small medical vision-language model, built from transformers' own
LLaVA classes so that a user's LLaVA-Med / TinyLLaVA-style HF checkpoint runs through the same
code.

Architecture: a ViT-Hybrid vision tower (160x160 input -> 5x5 = 25 image tokens), LLaVA's
two-layer GELU projector, and SmolLM2-135M-Instruct as the language model (its weights copied
in, plus one `<image>` token). The tower is transformers' DPT backbone in its hybrid form, as in
the ViT paper's R50+ViT: a small ResNet stem (stride 32) feeds a 2-layer ViT encoder of width
192 (random init: no pretrained tower is available offline). The convolutional stem is there
because the tower must learn to see from scratch within the recipe's budget; see
docs/finetune.md for what it learns.

`load_medvlm()` rebuilds that model and applies the trained parts committed under
`weights/medvlm/` (see `mfmaccel.models.medvlm_parts`): the vision tower and projector are loaded
as they are, and the LoRA adapter is merged into the language model, so the result is a plain
`LlavaForConditionalGeneration` (no peft at inference, saves as an ordinary HF folder).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers as tf

from mfmaccel.models.hf import load_builtin
from mfmaccel.models.medvlm_parts import MANIFEST, apply_trained_parts, read_manifest
from mfmaccel.models.record import VLM, LoadedModel
from mfmaccel.models.zoo import BUILTIN_MODELS
from mfmaccel.runtime.fewrows import use_few_rows_linear

MEDVLM_NAME = "medvlm"
MEDVLM_V1 = "medvlm-v1"  # the first medvlm: ViT-hybrid tower trained from scratch, on medvqa
LANGUAGE_MODEL = "smollm2-135m"
IMAGE_TOKEN = "<image>"


class ImageGrid:
    """Image tokens of a tower that sees `image_size` pixels in `patch_size` squares."""

    image_size: int
    patch_size: int

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def image_tokens(self) -> int:
        return self.grid**2


@dataclass(frozen=True)
class VisionSize(ImageGrid):
    """The tower's shape; the defaults are the CPU trade-off used by `medvlm`."""

    image_size: int = 160  # 5x5 = 25 image tokens: cheaper steps buy more training (finetune.md)
    stem_widths: tuple[int, ...] = (32, 64, 96, 128)  # ResNet stages; total stride 32
    stem_depths: tuple[int, ...] = (1, 1, 1, 1)
    stem_embedding: int = 16
    hidden_size: int = 192  # ViT encoder width
    layers: int = 2
    heads: int = 3
    mlp_ratio: int = 4
    patch_size: int = 32  # the stem's total stride: one image token per 32x32 pixels


TINY_VISION = VisionSize(image_size=64, stem_widths=(8, 8, 8, 8), stem_embedding=8,
                         hidden_size=32, layers=1, heads=2)


@dataclass(frozen=True)
class PretrainedTower(ImageGrid):
    """A pretrained ViT from the zoo as medvlm's tower, read at `image_size` pixels (a multiple
    of its patch: DINOv2's position embeddings are interpolated to any grid). 112 pixels give
    8x8 = 64 image tokens, a quarter of 224's 256: every step through the language model pays
    for each one."""

    tower: str = "dinov2-s14"
    image_size: int = 112
    patch_size: int = 14


Vision = VisionSize | PretrainedTower
TINY_PRETRAINED = PretrainedTower(image_size=28)  # tests: a tiny random DINOv2, 2x2 tokens


def default_weights_dir(name: str = MEDVLM_NAME) -> Path:
    """`weights/<name>/` at the repository root (where the trained parts are committed):
    `medvlm` on the DINOv2 tower, `medvlm-v1` the earlier one on its from-scratch tower."""
    return Path(__file__).resolve().parents[3] / "weights" / name


def vision_config(size: VisionSize) -> tf.DPTConfig:
    """ViT-Hybrid: a ResNet stem (basic blocks, batch norm) whose last stage feeds a ViT."""
    stem = tf.ResNetConfig(
        embedding_size=size.stem_embedding, hidden_sizes=list(size.stem_widths),
        depths=list(size.stem_depths), layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )
    return tf.DPTConfig(
        is_hybrid=True, backbone_config=stem, image_size=size.image_size,
        patch_size=size.patch_size, hidden_size=size.hidden_size, num_hidden_layers=size.layers,
        num_attention_heads=size.heads, intermediate_size=size.mlp_ratio * size.hidden_size,
        backbone_featmap_shape=[1, size.stem_widths[-1], size.grid, size.grid],
        neck_hidden_sizes=[*size.stem_widths[:3], size.hidden_size],  # unused by the tower
    )


def image_processor(size: VisionSize) -> tf.ViTImageProcessorPil:
    """The Pil flavour: the torchvision one prints a warning when torchvision is absent."""
    return tf.ViTImageProcessorPil(size={"height": size.image_size, "width": size.image_size})


def _pretrained_tower(vision: PretrainedTower, tiny: bool) -> tuple[torch.nn.Module, object]:
    """(tower module, its image processor at `vision.image_size`); with `tiny`, a seeded random
    DINOv2 of the same family (one layer, width 32) so tests need no weights."""
    from mfmaccel.models.onnx_vit import image_processor as dinov2_processor

    if tiny:
        torch.manual_seed(0)
        config = tf.Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 patch_size=vision.patch_size, image_size=vision.image_size)
        module = tf.Dinov2Model(config).eval()
    else:
        module = load_builtin(BUILTIN_MODELS[vision.tower], torch.float32).module
    if module.config.patch_size != vision.patch_size:
        raise ValueError(f"{vision.tower} has {module.config.patch_size}-pixel patches, "
                         f"not {vision.patch_size}")
    return module, dinov2_processor(vision.image_size)


def _tokenizer_with_image_token(tokenizer) -> tf.PreTrainedTokenizerBase:
    """The same tokenizer plus an `<image>` special token registered as its `image_token`."""
    if getattr(tokenizer, "image_token", None) == IMAGE_TOKEN:
        return tokenizer
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return tf.AutoTokenizer.from_pretrained(
            folder, extra_special_tokens={"image_token": IMAGE_TOKEN}
        )


def _language_model(tiny: bool) -> tuple[torch.nn.Module, tf.PreTrainedTokenizerBase]:
    """SmolLM2-135M, or for tests `tiny-llama` (seeded, so `load_medvlm` rebuilds the same
    random language model the trained parts were fitted on, whatever ran before)."""
    if tiny:
        from mfmaccel.models.tiny import build_tiny

        lm = build_tiny("llama")
        return lm.module, lm.tokenizer
    lm = load_builtin(BUILTIN_MODELS[LANGUAGE_MODEL], torch.float32)
    use_few_rows_linear(lm.module)  # as `load_model` gives it
    return lm.module, lm.tokenizer


def _grown_embeddings(weight: torch.Tensor, vocab: int) -> torch.Tensor:
    """`weight` with rows appended up to `vocab`, each the mean embedding (deterministic; the
    `<image>` row is never read: LLaVA replaces image tokens by image features)."""
    extra = vocab - weight.shape[0]
    return torch.cat([weight, weight.mean(0, keepdim=True).expand(extra, -1)]) if extra else weight


def _copy_language_model(module: tf.LlavaForConditionalGeneration, lm: torch.nn.Module) -> None:
    state = {k.removeprefix("model."): v for k, v in lm.state_dict().items()}
    state.pop("lm_head.weight", None)  # tied to the embeddings
    vocab = module.config.text_config.vocab_size
    state["embed_tokens.weight"] = _grown_embeddings(state["embed_tokens.weight"], vocab)
    module.model.language_model.load_state_dict(state, strict=True)
    module.tie_weights()


def build_medvlm(
    seed: int = 0, tiny: bool = False, vision: Vision | None = None
) -> LoadedModel:
    """The untrained medvlm: a random projector (seeded), SmolLM2-135M's weights, and either a
    random ViT-hybrid tower (`VisionSize`, seeded) or a pretrained one (`PretrainedTower`).

    `tiny=True` swaps SmolLM2 for the tiny random Llama of `tiny-llama` and uses a 32x32 tower,
    so tests run in a second through exactly the same code.
    """
    vision = vision or (TINY_VISION if tiny else PretrainedTower())
    lm, tokenizer = _language_model(tiny)
    tokenizer = _tokenizer_with_image_token(tokenizer)
    text_config = lm.config.__class__.from_dict(lm.config.to_dict())
    text_config.vocab_size = max(len(tokenizer), text_config.vocab_size)
    pretrained, images = None, None
    if isinstance(vision, PretrainedTower):
        pretrained, images = _pretrained_tower(vision, tiny)
    config = tf.LlavaConfig(
        vision_config=pretrained.config if pretrained is not None else vision_config(vision),
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",  # drop the CLS token: grid x grid image tokens
        projector_hidden_act="gelu",
        tie_word_embeddings=bool(getattr(lm.config, "tie_word_embeddings", True)),
    )
    torch.manual_seed(seed)
    module = tf.LlavaForConditionalGeneration(config)
    _copy_language_model(module, lm)
    if pretrained is not None:
        module.model.vision_tower.load_state_dict(pretrained.state_dict(), strict=True)
    module.eval()
    processor = tf.LlavaProcessor(
        image_processor=images or image_processor(vision), tokenizer=tokenizer,
        patch_size=vision.patch_size, vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    name = f"{MEDVLM_NAME}-tiny" if tiny else f"{MEDVLM_NAME}-base"
    language = "tiny-llama" if tiny else LANGUAGE_MODEL
    return LoadedModel(
        name=name, module=module, tokenizer=tokenizer, family=config.model_type, kind=VLM,
        source=f"untrained (ViT seed {seed}; language model {language})",
        processor=processor, meta={"vision": asdict(vision), "tiny": tiny, "seed": seed},
    )


def vision_size(fields: dict) -> Vision:
    """A `VisionSize` or `PretrainedTower` from its JSON form (lists back to tuples)."""
    if "tower" in fields:
        return PretrainedTower(**fields)
    return VisionSize(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def holds_trained_parts(folder: Path) -> bool:
    """A folder `mfmaccel finetune` wrote (trained parts + manifest, no full checkpoint): `--model
    <folder>` loads it as medvlm with those parts."""
    return (folder / MANIFEST).is_file() and not (folder / "config.json").exists()


def load_medvlm(weights_dir: str | Path | None = None) -> LoadedModel:
    """medvlm with its trained parts applied (checked against their manifest's sha256).

    Missing or corrupt files raise `UserInputError` naming the fix (`mfmaccel finetune`, or
    `git checkout weights/`).
    """
    folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    manifest = read_manifest(folder)
    model = build_medvlm(
        seed=manifest["seed"], tiny=manifest["tiny"], vision=vision_size(manifest["vision"])
    )
    apply_trained_parts(model, folder, manifest)
    # the benchmark it was adapted on: where its VQA calibration data comes from
    model.meta["benchmark"] = manifest.get("config", {}).get("benchmark", "medvqa")
    model.name = model.name.replace("-base", "")
    model.source = f"{folder} (trained parts) + {LANGUAGE_MODEL}"
    return model

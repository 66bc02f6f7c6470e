"""Seeded, randomly initialised small configs of real architectures, for tests.

Each builds in well under a second and goes through the same code as a pretrained model: the
classes are transformers' own, only the sizes are small. Text models share a byte-level
tokenizer built in memory, so no tokenizer file is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
import transformers as tf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from mfmaccel.models.record import CAUSAL_LM, ENCODER, VISION, VLM, LoadedModel

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
IMAGE_SIZE = 32
PATCH_SIZE = 8
HIDDEN = 64
LAYERS = 2
HEADS = 4


@lru_cache(maxsize=1)
def byte_tokenizer() -> tf.PreTrainedTokenizerFast:
    """A lossless byte-level tokenizer: 256 byte tokens plus a few specials, no merges."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {char: i for i, char in enumerate(sorted(alphabet))}
    vocab.update({tok: len(vocab) + i for i, tok in enumerate(SPECIAL_TOKENS)})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = tf.PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.model_max_length = 512
    return tokenizer


def _text_sizes() -> dict:
    tokenizer = byte_tokenizer()
    return {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _llama_config() -> tf.LlamaConfig:
    return tf.LlamaConfig(
        hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=HEADS // 2, max_position_embeddings=512,
        tie_word_embeddings=True, **_text_sizes(),
    )


def _tiny_llama() -> torch.nn.Module:
    return tf.LlamaForCausalLM(_llama_config())


def _tiny_qwen2() -> torch.nn.Module:
    config = tf.Qwen2Config(
        hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=HEADS // 2, max_position_embeddings=512,
        tie_word_embeddings=True, **_text_sizes(),
    )
    return tf.Qwen2ForCausalLM(config)


def _tiny_gpt2() -> torch.nn.Module:
    sizes = _text_sizes()
    config = tf.GPT2Config(
        n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=512,
        vocab_size=sizes["vocab_size"], bos_token_id=sizes["bos_token_id"],
        eos_token_id=sizes["eos_token_id"],
    )
    return tf.GPT2LMHeadModel(config)


def _tiny_bert() -> torch.nn.Module:
    config = tf.BertConfig(
        hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, max_position_embeddings=512,
        vocab_size=_text_sizes()["vocab_size"], pad_token_id=_text_sizes()["pad_token_id"],
    )
    return tf.BertModel(config)


def _vit_config() -> tf.ViTConfig:
    return tf.ViTConfig(
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
    )


def _tiny_vit() -> torch.nn.Module:
    return tf.ViTModel(_vit_config())


def _tiny_llava() -> torch.nn.Module:
    tokenizer = byte_tokenizer()
    config = tf.LlavaConfig(
        vision_config=tf.CLIPVisionConfig(
            image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=HIDDEN,
            intermediate_size=2 * HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            projection_dim=HIDDEN,
        ),
        text_config=_llama_config(),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=True,
    )
    return tf.LlavaForConditionalGeneration(config)


def _image_processor() -> tf.CLIPImageProcessorPil:
    side = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    return tf.CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size=side)


# arch -> (what the model can do, how to build it)
TINY_BUILDERS: dict[str, tuple[str, Callable[[], torch.nn.Module]]] = {
    "llama": (CAUSAL_LM, _tiny_llama),
    "qwen2": (CAUSAL_LM, _tiny_qwen2),
    "gpt2": (CAUSAL_LM, _tiny_gpt2),
    "bert": (ENCODER, _tiny_bert),
    "vit": (VISION, _tiny_vit),
    "llava": (VLM, _tiny_llava),
}


def build_tiny(arch: str, seed: int = 0) -> LoadedModel:
    """`tiny-<arch>`: the same seed gives the same weights."""
    torch.manual_seed(seed)
    kind, build = TINY_BUILDERS[arch]
    module = build()
    module.eval()
    tokenizer = byte_tokenizer()
    processor = None
    if kind == VISION:
        processor = _image_processor()
    elif kind == VLM:
        processor = tf.LlavaProcessor(
            image_processor=_image_processor(), tokenizer=tokenizer, patch_size=PATCH_SIZE,
            vision_feature_select_strategy="default", num_additional_image_tokens=1,
        )
    return LoadedModel(
        name=f"tiny-{arch}", module=module, tokenizer=tokenizer, family=module.config.model_type,
        kind=kind, source=f"random init (seed {seed})", processor=processor,
    )

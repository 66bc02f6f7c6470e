"""Loading weights from where they live: a built-in model's package, a Hugging Face folder, a
GGUF file. GGUF files are dequantized once (about 20 s for a 135M model, minutes for a 1.5B one)
and kept as a safetensors folder in the cache, so every later load takes seconds. A folder is
checked (files, config, tensors, tokenizer) before any weight is read."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import torch

from mfmaccel.errors import UserInputError
from mfmaccel.fileio import atomic_directory
from mfmaccel.models.checks import check_gguf_file, check_hf_folder
from mfmaccel.models.onnx_vit import convert_onnx_dinov2
from mfmaccel.models.packaged import (
    file_sha256,
    join_gguf,
    package_folder,
    verify_gguf,
    weight_files,
)
from mfmaccel.models.preprocessing import (
    check_image_processor_files,
    check_tokenizer_files,
    check_tokenizer_fits,
)
from mfmaccel.models.record import CAUSAL_LM, ENCODER, VISION, VLM, LoadedModel
from mfmaccel.models.tensors import check_tensors_match, first_line, meta_module
from mfmaccel.models.zoo import BuiltinModel
from mfmaccel.runtime.cachedir import cache_root
from mfmaccel.runtime.storage import load_quantized_module

SOURCE_MARKER = "mfmaccel-source.json"


def load_builtin(model: BuiltinModel, dtype: torch.dtype) -> LoadedModel:
    if model.weights.fmt == "hf-folder":
        folder = package_folder(model.weights.packages[0], model) / model.weights.files
        return load_hf_folder(folder, name=model.name, source=model.upstream, dtype=dtype)
    cached = cache_root() / "models" / model.name
    if not _cache_matches(cached, model.weights.sha256):
        onnx = model.weights.fmt == "onnx-vit"
        (_convert_builtin_onnx if onnx else _convert_builtin_gguf)(model, cached)
    return _load_converted(cached, name=model.name, source=model.upstream, dtype=dtype)


def _cache_matches(folder: Path, sha256: str | None) -> bool:
    marker = folder / SOURCE_MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("sha256") == sha256
    except json.JSONDecodeError:
        return False


def _convert_builtin_gguf(model: BuiltinModel, cached: Path) -> None:
    files = weight_files(model)
    with tempfile.TemporaryDirectory(dir=_tmp_dir()) as scratch:
        if len(files) == 1:
            gguf = files[0]
            verify_gguf(model, gguf)
        else:
            gguf = join_gguf(model, Path(scratch) / f"{model.name}.gguf")
        convert_gguf(gguf, cached, {"sha256": model.weights.sha256, "upstream": model.upstream})


def _convert_builtin_onnx(model: BuiltinModel, cached: Path) -> None:
    """A ViT inside a package's ONNX file, checked by size and sha256 before it is read."""
    (onnx_file,) = weight_files(model)
    size, sha256 = model.weights.size, model.weights.sha256
    if onnx_file.stat().st_size != size or file_sha256(onnx_file) != sha256:
        raise UserInputError(
            f"{onnx_file} is not the file '{model.name}' was built from (size or sha256 differ); "
            f"reinstall with `{model.weights.install_command()} --force-reinstall`"
        )
    marker = {"sha256": model.weights.sha256, "upstream": model.upstream}
    convert_onnx_dinov2(onnx_file, cached, marker, marker_name=SOURCE_MARKER)


def _tmp_dir() -> Path:
    folder = cache_root() / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def convert_gguf(gguf: Path, out: Path, marker: dict) -> None:
    """Dequantize a GGUF file with transformers and save it as a safetensors HF folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        module = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    except (ValueError, KeyError, NotImplementedError) as err:
        raise UserInputError(
            f"transformers cannot load {gguf} ({str(err).splitlines()[0]}); convert it to a "
            "Hugging Face folder first"
        ) from None
    # The weights are plain float tensors now; drop transformers' "quantized by gguf" marker so
    # the model saves as an ordinary checkpoint.
    module.hf_quantizer = None
    if hasattr(module.config, "quantization_config"):
        del module.config.quantization_config
    with atomic_directory(out) as tmp:
        module.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / SOURCE_MARKER).write_text(json.dumps(marker, indent=2))


def load_gguf_path(path: Path, dtype: torch.dtype) -> LoadedModel:
    check_gguf_file(path)
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    cached = cache_root() / "gguf" / f"{path.stem}-{key[:12]}"
    if not _cache_matches(cached, key):
        convert_gguf(path, cached, {"sha256": key, "upstream": str(path)})
    return _load_converted(cached, name=path.stem, source=str(path), dtype=dtype)


def _load_converted(cached: Path, *, name: str, source: str, dtype: torch.dtype) -> LoadedModel:
    """A GGUF file's converted folder; a fault found in it is fixed by converting again."""
    try:
        return load_hf_folder(cached, name=name, source=source, dtype=dtype)
    except UserInputError as err:
        raise UserInputError(f"{err} (this is {source} converted: delete {cached} to convert "
                             "it again)") from None


ENCODER_FAMILIES = ("bert", "roberta", "distilbert", "xlm-roberta", "electra")
VISION_FAMILIES = ("vit", "clip_vision_model", "siglip_vision_model", "dinov2")


def classify_config(config, folder: Path) -> str:
    """What a checkpoint can do, from its config alone (no weights read)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    family = config.model_type
    architectures = getattr(config, "architectures", None) or []
    if hasattr(config, "vision_config") and hasattr(config, "text_config"):
        return VLM
    causal_classes = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())  # GPT2LMHeadModel too
    causal_head = any(a in causal_classes for a in architectures)
    if family in ENCODER_FAMILIES and not causal_head:
        return ENCODER  # BERT-family configs have a causal-LM class too; without one named, no
    if family in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and (not architectures or causal_head):
        return CAUSAL_LM
    if family in VISION_FAMILIES:
        return VISION
    raise UserInputError(
        f"{folder}: unsupported architecture '{family}'; supported: causal LMs, LLaVA, "
        "ViT and BERT-family encoders"
    )


def read_config(folder: Path):
    """The folder's transformers config; a value transformers rejects is one line."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder)
    except Exception as err:  # its validators raise many types, each for a bad value
        raise UserInputError(f"{folder / 'config.json'} is not a config transformers can read "
                             f"({first_line(err.__cause__ or err)}); fix or re-save it") from None


def load_hf_folder(folder: Path, *, name: str, source: str, dtype: torch.dtype) -> LoadedModel:
    """Load an HF folder with the auto class its config calls for, once it is known to be
    whole: sound files, exactly the tensors the config needs, a tokenizer or image processor,
    and a tokenizer whose ids the model can embed."""
    import transformers as tf

    tensors = check_hf_folder(folder)
    config = read_config(folder)
    kind = classify_config(config, folder)
    auto = {VLM: tf.AutoModelForImageTextToText, CAUSAL_LM: tf.AutoModelForCausalLM}.get(
        kind, tf.AutoModel
    )
    quantized = (folder / "quantization.json").is_file()
    skeleton = meta_module(config, auto)
    if not quantized:  # packed tensors: runtime.storage checks them against the plan
        check_tensors_match(folder, skeleton, tensors)
    processor, tokenizer = _preprocessing(folder, kind)
    if tokenizer is not None:
        check_tokenizer_fits(tokenizer, _embedding_rows(skeleton, config), str(folder))
    meta = {}
    if quantized:
        module, meta["quantization"] = load_quantized_module(
            folder, auto.from_config(config, dtype=dtype))
    else:
        module = auto.from_pretrained(folder, dtype=dtype).eval()
    return LoadedModel(
        name=name, module=module, tokenizer=tokenizer, family=config.model_type, kind=kind,
        source=source, processor=processor, meta=meta,
    )


def _preprocessing(folder: Path, kind: str) -> tuple[object, object]:
    """(processor, tokenizer) for a model of `kind`, after checking their files exist."""
    import transformers as tf

    if kind in (VLM, VISION):
        check_image_processor_files(folder)
    if kind != VISION:
        check_tokenizer_files(folder)
    if kind == VLM:
        processor = tf.AutoProcessor.from_pretrained(folder)
        return processor, processor.tokenizer
    if kind == VISION:
        return tf.AutoImageProcessor.from_pretrained(folder), None
    return None, tf.AutoTokenizer.from_pretrained(folder)


def _embedding_rows(skeleton: torch.nn.Module, config) -> int:
    """Rows of the token embedding (the ids the model can look up)."""
    embedding = skeleton.get_input_embeddings()
    rows = getattr(embedding, "num_embeddings", None)
    return rows if rows is not None else config.get_text_config().vocab_size



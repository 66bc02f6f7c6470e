"""`export_gguf`: a Llama- or Qwen2-family model, packed or not, as one GGUF file for llama.cpp.

Each packed tensor keeps its plan: written as the GGUF block type nearest it (`gguf_blocks`),
with our integers and scales as they are, so llama.cpp computes with our weights, not with a
second rounding of them. What no block type holds goes out as F16 of our dequantized weight,
and the report names it. The file is written beside `out` and renamed into place at the end.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType as GGML
from gguf import GGUFReader, GGUFWriter, LlamaFileType
from torch import nn

from mfmaccel.errors import UserInputError
from mfmaccel.fileio import atomic_file, check_parent_folder, check_replaceable_file
from mfmaccel.models.gguf_blocks import encode
from mfmaccel.models.gguf_vocab import Writer, add_vocab
from mfmaccel.models.record import LoadedModel
from mfmaccel.records import Record
from mfmaccel.runtime.anatomy import embeddings_tied
from mfmaccel.runtime.grid import QuantizedTensor, dequantize
from mfmaccel.runtime.linear import QuantLinear

FAMILIES = ("llama", "qwen2")
MARKER_KEY = "mfmaccel.export"  # lets a later export replace this file, and nothing else
ROUNDED = (GGML.Q4_1, GGML.Q5_1)  # their offset m = -zero * scale is rounded to fp16
FILE_TYPES = {GGML.F16: LlamaFileType.MOSTLY_F16, GGML.Q8_0: LlamaFileType.MOSTLY_Q8_0,
              GGML.Q4_0: LlamaFileType.MOSTLY_Q4_0, GGML.Q4_1: LlamaFileType.MOSTLY_Q4_1,
              GGML.Q5_0: LlamaFileType.MOSTLY_Q5_0, GGML.Q5_1: LlamaFileType.MOSTLY_Q5_1}
_BLOCK_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
                "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
_TOP_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm",
              "lm_head": "output"}


@dataclasses.dataclass
class ExportReport(Record):
    """What was written: each tensor's GGUF type, and where our weights were not kept as they
    are (`rounded`: the fp16 offset of a _1 block; `not_kept`: dequantized to F16, with the
    spec no GGUF type holds)."""

    path: str
    format: str
    bytes: int
    tensors: dict[str, str]
    tokenizer: str = ""  # the GGUF tokenizer model, "gpt2/<pre-tokenizer>" or "llama"
    rounded: list[str] = dataclasses.field(default_factory=list)
    not_kept: dict[str, str] = dataclasses.field(default_factory=dict)


def export_gguf(model: LoadedModel, out: Path) -> ExportReport:
    """Write `model` to the GGUF file `out` (refused before any work if `out` is not ours)."""
    out = Path(out)
    check_family(model)
    check_gguf_out(out)
    report = ExportReport(str(out), "gguf", 0, {})
    with atomic_file(out) as tmp:
        _write(model, tmp, report)
    report.bytes = out.stat().st_size
    return report


def check_family(model: LoadedModel) -> None:
    if model.family not in FAMILIES:
        raise UserInputError(f"GGUF export supports the {' and '.join(FAMILIES)} families, not "
                             f"'{model.family}'; export it with --format hf instead")


def check_gguf_out(out: Path) -> None:
    """Refuse an `out` in a missing folder, a folder or link, or a file mfmaccel did not write."""
    check_parent_folder(out)
    check_replaceable_file(out, ours=_ours, what="a GGUF file mfmaccel export wrote")


def _ours(path: Path) -> bool:
    try:
        return MARKER_KEY in GGUFReader(path).fields
    except (ValueError, OSError, IndexError, KeyError):  # not a GGUF file at all
        return False


def _write(model: LoadedModel, path: Path, report: ExportReport) -> None:
    config = model.module.config
    writer = Writer(path, model.family)
    for name, array, kind in _tensors(model.module, report):
        writer.add_tensor(name, array, raw_dtype=kind if kind not in (GGML.F16,
                                                                      GGML.F32) else None)
        report.tensors[name] = kind.name
    _add_config(writer, model, config)
    writer.add_file_type(_file_type(report))
    report.tokenizer = add_vocab(writer, model.tokenizer, config.vocab_size)
    writer.add_string(MARKER_KEY, model.name)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_config(writer: GGUFWriter, model: LoadedModel, config) -> None:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_name(model.name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(_rope_theta(config)))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)


def _rope_theta(config) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise UserInputError(f"GGUF export writes plain RoPE only, not '{rope['rope_type']}' "
                             "scaling; export with --format hf instead")
    return rope.get("rope_theta") or getattr(config, "rope_theta", 10000.0)


def _file_type(report: ExportReport) -> LlamaFileType:
    """The type most matrices have (llama.cpp only prints it)."""
    kinds = [GGML[k] for k in report.tensors.values() if GGML[k] != GGML.F32]
    return FILE_TYPES[max(set(kinds), key=kinds.count)] if kinds else LlamaFileType.ALL_F32


def _tensors(module: nn.Module, report: ExportReport) -> Iterator[tuple[str, np.ndarray, GGML]]:
    """(GGUF name, data, type) for every tensor llama.cpp reads, tied weights once."""
    config = module.config
    for hf_name, value in _hf_tensors(module):
        name = gguf_name(hf_name)
        heads = _permuted_heads(config, name)
        if isinstance(value, QuantLinear):
            yield name, *_packed(value.quantized(), heads, name, report)
        else:
            data = _permute(value.detach().float(), heads)
            yield name, *_float(data)


def _hf_tensors(module: nn.Module) -> Iterator[tuple[str, QuantLinear | torch.Tensor]]:
    head, embed = module.get_output_embeddings(), module.get_input_embeddings()
    tied = embeddings_tied(module)
    for prefix, mod in module.named_modules():
        if tied and mod is head:
            continue
        if tied and mod is embed:  # stored once, as the (possibly packed) head
            yield f"{prefix}.weight", head if isinstance(head, QuantLinear) else head.weight
        elif isinstance(mod, QuantLinear):
            yield f"{prefix}.weight", mod
            if mod.bias is not None:
                yield f"{prefix}.bias", mod.bias
        else:
            for key, param in mod.named_parameters(recurse=False):
                yield f"{prefix}.{key}", param


def gguf_name(hf_name: str) -> str:
    """llama.cpp's name for a Hugging Face Llama/Qwen2 tensor name."""
    stem, _, suffix = hf_name.rpartition(".")
    if stem in _TOP_NAMES:
        return f"{_TOP_NAMES[stem]}.{suffix}"
    match = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", stem)
    if match is None or match.group(2) not in _BLOCK_NAMES:
        raise UserInputError(f"no GGUF name for tensor {hf_name}; this model has parts llama.cpp "
                             "does not read, export it with --format hf instead")
    return f"blk.{match.group(1)}.{_BLOCK_NAMES[match.group(2)]}.{suffix}"


def _permuted_heads(config, name: str) -> int | None:
    """Heads to permute by: llama.cpp's Llama rotates adjacent pairs, Hugging Face's rotates
    halves, so the HF->GGUF converter reorders q and k rows (Qwen2 uses halves in both)."""
    if config.model_type != "llama":
        return None
    if ".attn_q." in name:
        return config.num_attention_heads
    if ".attn_k." in name:
        return getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return None


def _permute(rows: torch.Tensor, heads: int | None) -> torch.Tensor:
    """convert_hf_to_gguf's `permute`: each head's two halves interleaved, row by row."""
    if heads is None:
        return rows
    shape = rows.shape
    return rows.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(
        shape)


def _packed(qt: QuantizedTensor, heads: int | None, name: str,
            report: ExportReport) -> tuple[np.ndarray, GGML]:
    qt = QuantizedTensor(_permute(qt.q, heads), _permute(qt.scale, heads),
                         _permute(qt.zero, heads), qt.spec)
    encoded = encode(qt)
    if encoded is None:
        report.not_kept[name] = qt.spec.label
        return dequantize(qt).half().numpy(), GGML.F16
    if not encoded.exact:
        report.rounded.append(name)
    return encoded.data, encoded.kind


def _float(data: torch.Tensor) -> tuple[np.ndarray, GGML]:
    """Norms and biases in F32, float matrices in F16."""
    if data.dim() == 1:
        return data.numpy().astype(np.float32), GGML.F32
    return data.half().numpy(), GGML.F16

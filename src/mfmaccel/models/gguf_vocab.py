"""A tokenizer's GGUF keys: what llama.cpp reads to tokenize and detokenize as the model did.

Byte-level BPE tokenizers (Qwen2, Llama 3, SmolLM, our tiny models) go out as llama.cpp's
"gpt2" model with their merges; a tokenizer with byte fallback (Llama 1/2's sentencepiece,
converted to tokenizer.json) goes out as its "llama" model, whose byte tokens `<0xXX>` are
typed as bytes. Token ids past the tokenizer's end (vocabularies padded to a round size) get
placeholder tokens, because llama.cpp wants one token per row of the embedding.
"""

from __future__ import annotations

import json
from typing import Any

from gguf import GGUFValueType, GGUFWriter, Keys, TokenType

from mfmaccel.errors import UserInputError

# llama.cpp's name for the rule that splits text before merging, by the split regex of
# tokenizer.json (transformers' Qwen2 and Llama 3 patterns)
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_BY_SPLIT = {_QWEN2_SPLIT: "qwen2", _LLAMA3_SPLIT: "llama-bpe"}


class Writer(GGUFWriter):
    """`GGUFWriter` that also writes empty arrays, which the format allows and the package
    refuses: a byte-level vocabulary without merges (our tiny models) still needs the key."""

    def _pack_val(self, val: Any, vtype: GGUFValueType, add_vtype: bool,
                  sub_type: GGUFValueType | None = None) -> bytes:
        if vtype != GGUFValueType.ARRAY or len(val) or sub_type is None:
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        head = self._pack("I", vtype) if add_vtype else b""
        return head + self._pack("I", sub_type) + self._pack("Q", 0)


def add_vocab(writer: GGUFWriter, tokenizer: Any, vocab_size: int) -> str:
    """Write the tokenizer keys; returns what was written: "gpt2/<pre>" or "llama"."""
    if tokenizer is None or not getattr(tokenizer, "is_fast", False):
        raise UserInputError("the model has no fast (tokenizer.json) tokenizer to export; save "
                             "one beside the weights, then export again")
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    tokens, types = _tokens(tokenizer, vocab_size)
    sentencepiece = bool(model.get("byte_fallback"))
    writer.add_tokenizer_model("llama" if sentencepiece else "gpt2")
    pre = None if sentencepiece else pre_tokenizer(json.loads(
        tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer"))
    if pre is not None:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    if sentencepiece:
        types = [TokenType.BYTE if _is_byte(t) and kind == TokenType.NORMAL else kind
                 for t, kind in zip(tokens, types, strict=True)]
        writer.add_token_scores([0.0 if kind != TokenType.NORMAL else -float(i)
                                 for i, kind in enumerate(types)])
    writer.add_token_types(types)
    merges = [_merge(m) for m in model.get("merges", [])]  # llama.cpp's gpt2 model wants the key
    writer.add_key_value(Keys.Tokenizer.MERGES, merges, GGUFValueType.ARRAY,
                         sub_type=GGUFValueType.STRING)
    _add_special_ids(writer, tokenizer)
    if isinstance(getattr(tokenizer, "chat_template", None), str):
        writer.add_chat_template(tokenizer.chat_template)
    return "llama" if sentencepiece else f"gpt2/{pre or 'default'}"


def pre_tokenizer(pre: dict | None) -> str | None:
    """llama.cpp's `tokenizer.ggml.pre` for a tokenizer.json pre-tokenizer, None when unknown
    (llama.cpp then splits with its default rule, and says so when it loads the file)."""
    steps = (pre or {}).get("pretokenizers", [pre] if pre else [])
    kinds = [step.get("type") for step in steps]
    if kinds and kinds[0] == "Split":
        return PRE_BY_SPLIT.get(steps[0].get("pattern", {}).get("Regex"))
    if kinds == ["ByteLevel"] and steps[0].get("use_regex"):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") \
            and steps[1].get("use_regex"):
        return "smollm"  # GPT-2's split with each digit apart
    return None


def _tokens(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """Every id's token text and type, padded to `vocab_size`."""
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    special = set(tokenizer.all_special_ids)
    added = {i for i in getattr(tokenizer, "added_tokens_decoder", {})}
    tokens, types = [], []
    for i in range(max(vocab_size, len(by_id))):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
            continue
        tokens.append(by_id[i])
        types.append(TokenType.CONTROL if i in special else
                     TokenType.USER_DEFINED if i in added else TokenType.NORMAL)
    return tokens, types


def _is_byte(token: str) -> bool:
    return len(token) == 6 and token.startswith("<0x") and token.endswith(">")


def _merge(merge: str | list[str]) -> str:
    """tokenizer.json writes a merge as "a b" (older files) or ["a", "b"]."""
    return merge if isinstance(merge, str) else " ".join(merge)


def _add_special_ids(writer: GGUFWriter, tokenizer: Any) -> None:
    ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id,
           "unk": tokenizer.unk_token_id, "pad": tokenizer.pad_token_id}
    adders = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id,
              "unk": writer.add_unk_token_id, "pad": writer.add_pad_token_id}
    for key, value in ids.items():
        if value is not None:
            adders[key](int(value))
    writer.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))

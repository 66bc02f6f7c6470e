"""The tokenizer and image processor a model folder must carry, and a tokenizer that fits.

Why: transformers builds an empty tokenizer for a folder without tokenizer files, and the
failure surfaces later as something else ("calibration text has 0 tokens", or `generate`
printing nothing and exiting 0). A tokenizer with more ids than the model has embedding rows
crashes every later stage with an IndexError. Both are decided here, before any weight loads.
"""

from __future__ import annotations

import json
from pathlib import Path

from mfmaccel.errors import UserInputError

# Files holding a vocabulary: tokenizers' JSON, sentencepiece models, BPE/WordPiece vocabularies.
VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model",
                    "sentencepiece.bpe.model", "vocab.json", "vocab.txt", "tokenizer.tiktoken")
IMAGE_PROCESSOR_FILE = "preprocessor_config.json"
PROCESSOR_FILE = "processor_config.json"  # transformers 5 saves the image processor inside


def check_tokenizer_files(folder: Path) -> None:
    """The folder has a vocabulary file a tokenizer can be built from."""
    if not any((folder / name).is_file() for name in VOCABULARY_FILES):
        raise UserInputError(
            f"{folder} has no tokenizer files (one of {', '.join(VOCABULARY_FILES)}); save the "
            "model's tokenizer into it with tokenizer.save_pretrained(folder)"
        )


def check_image_processor_files(folder: Path) -> None:
    """The folder says how to turn an image into the tower's input."""
    if (folder / IMAGE_PROCESSOR_FILE).is_file() or _processor_has_images(folder):
        return
    raise UserInputError(
        f"{folder} has no image processor ({IMAGE_PROCESSOR_FILE}, or {PROCESSOR_FILE} with an "
        "image_processor); save it into the folder with processor.save_pretrained(folder)"
    )


def _processor_has_images(folder: Path) -> bool:
    path = folder / PROCESSOR_FILE
    if not path.is_file():
        return False
    try:
        return isinstance(json.loads(path.read_bytes()).get("image_processor"), dict)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise UserInputError(f"{path} is not a JSON object; fix or re-save it") from None


def check_tokenizer_fits(tokenizer, embedding_rows: int, where: str) -> None:
    """Every id the tokenizer can produce indexes a row of the model's token embedding."""
    size = len(tokenizer)
    if size == 0:
        raise UserInputError(f"{where}: the tokenizer is empty; save the model's own tokenizer "
                             "into the folder with tokenizer.save_pretrained(folder)")
    if size > embedding_rows:
        raise UserInputError(
            f"{where}: the tokenizer has {size} tokens but the model's embedding has "
            f"{embedding_rows} rows (vocab_size), so ids from {embedding_rows} up fall outside "
            "it; save the model's own tokenizer, or grow the model with "
            "model.resize_token_embeddings(len(tokenizer))"
        )

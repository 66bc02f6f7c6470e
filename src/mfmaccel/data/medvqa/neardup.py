"""Near-duplicate images: the same scan flipped, rotated, resized or re-encoded.

Public image sets such as Br35H hold one patient image several times over, so a split by file
would put the same scan in train and test. A difference hash (dHash) survives resizing and
re-encoding; taking it over all eight rotations and flips of an image makes it survive those
too. Images whose hashes are within SAME_IMAGE_BITS of each other are joined into one group, and
groups (not files) are what a split assigns. Pure numpy and PIL.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

HASH_SIDE = 16  # a 16 x 16 difference hash: 256 bits
HASH_BYTES = HASH_SIDE * HASH_SIDE // 8
THUMB_SIDE = 128  # every image is first reduced to a square thumbnail, then transformed
# Of 256 bits, at most this many differing is the same image. Measured on Br35H (docs/data.md):
# re-processed copies (contrast, sharpening, crops) reach ~30 bits, while the closest pair of
# a tumour and a no-tumour image (certainly two images) is 36 bits apart.
SAME_IMAGE_BITS = 32
DIHEDRAL = (  # identity, three rotations, and the four flips of the square
    None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270,
    Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE,
)
ROWS_PER_CHUNK = 64  # rows of the pairwise distance matrix computed at once (bounded memory)


def thumbnail(image: Image.Image) -> Image.Image:
    """A THUMB_SIDE square grayscale copy (aspect ratio dropped, as dHash does anyway)."""
    return image.convert("L").resize((THUMB_SIDE, THUMB_SIDE), Image.BICUBIC)


def dhash(gray: Image.Image) -> np.ndarray:
    """Bit-packed dHash of a grayscale image: resized to (HASH_SIDE + 1) x HASH_SIDE, each bit
    says whether a pixel is brighter than its right-hand neighbour. -> uint8 (HASH_BYTES,)."""
    small = np.asarray(gray.resize((HASH_SIDE + 1, HASH_SIDE), Image.BICUBIC), dtype=np.int16)
    return np.packbits(small[:, 1:] > small[:, :-1])


def dihedral_hashes(image: Image.Image) -> np.ndarray:
    """dHash of each of the eight rotations/flips of `image`. -> uint8 (8, HASH_BYTES)."""
    thumb = thumbnail(image)
    views = [thumb if move is None else thumb.transpose(move) for move in DIHEDRAL]
    return np.stack([dhash(view) for view in views])


def distances(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Hamming distance from each upright hash of `rows` to each image of `columns`, the
    least over that image's eight transforms. Both uint8 (n, 8, HASH_BYTES); -> uint16 (n, m).

    The hashes stay bit-packed (a boolean n x m x 8 x 256 array would need ~18 GB for 3000 x
    3000 images): XOR of 64-bit words, then a popcount, a block of rows at a time."""
    upright = np.ascontiguousarray(rows[:, 0]).view(np.uint64)  # (n, HASH_BYTES // 8)
    words = np.ascontiguousarray(columns).view(np.uint64)  # (m, 8, HASH_BYTES // 8)
    result = np.empty((len(rows), len(columns)), dtype=np.uint16)
    for start in range(0, len(rows), ROWS_PER_CHUNK):
        block = upright[start : start + ROWS_PER_CHUNK, None, None, :]
        bits = np.bitwise_count(block ^ words[None]).sum(axis=-1, dtype=np.uint16)
        result[start : start + ROWS_PER_CHUNK] = bits.min(axis=-1)
    return result


def pairwise_distances(hashes: np.ndarray) -> np.ndarray:
    """`distances` between every two images, symmetric: the least of either way round (the
    upright hash of one against the transforms of the other). -> uint16 (n, n)."""
    distance = distances(hashes, hashes)
    return np.minimum(distance, distance.T)


def _find(parent: list[int], item: int) -> int:
    while parent[item] != item:
        parent[item] = parent[parent[item]]  # path halving
        item = parent[item]
    return item


def group_labels(distance: np.ndarray, threshold: int = SAME_IMAGE_BITS) -> np.ndarray:
    """Union-find over every pair within `threshold` bits: the group of each image, numbered
    0, 1, ... in the order of each group's first image (so labels are deterministic)."""
    n = distance.shape[0]
    parent = list(range(n))
    for i, j in zip(*np.nonzero(np.triu(distance <= threshold, k=1)), strict=True):
        root_i, root_j = _find(parent, int(i)), _find(parent, int(j))
        if root_i != root_j:
            parent[max(root_i, root_j)] = min(root_i, root_j)
    roots = [_find(parent, i) for i in range(n)]
    numbering: dict[int, int] = {}
    return np.array([numbering.setdefault(root, len(numbering)) for root in roots])


def near_duplicate_groups(images: Sequence[Image.Image],
                          threshold: int = SAME_IMAGE_BITS) -> np.ndarray:
    """Group label of each image: images within `threshold` bits of each other, under some
    rotation or flip, directly or through a chain of such images, share a label."""
    hashes = np.stack([dihedral_hashes(image) for image in images])
    return group_labels(pairwise_distances(hashes), threshold)

"""Random views of a source image: crop/zoom, harmless flips, then intensity jitter and noise.

Views are what make one real image yield many distinct samples; every random draw comes from
the generator passed in, so a view is reproducible from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

VIEW_SIZE = 224
MIN_FOREGROUND = 0.25  # a crop must show at least this much anatomy
LUT_LEVELS = 4096


@dataclass
class View:
    """A (VIEW_SIZE, VIEW_SIZE, channels) float32 image in [0, 1] and its anatomy mask."""

    pixels: np.ndarray
    mask: np.ndarray


def random_crop_box(
    mask: np.ndarray, zoom: tuple[float, float], rng: np.random.Generator, tries: int = 20
) -> tuple[int, int, int]:
    """(row, col, side) of a square crop that shows enough anatomy (best of `tries`)."""
    h, w = mask.shape
    best, best_fraction = (0, 0, min(h, w)), -1.0
    for _ in range(tries):
        side = max(8, int(rng.uniform(*zoom) * min(h, w)))
        row = int(rng.integers(0, h - side + 1))
        col = int(rng.integers(0, w - side + 1))
        fraction = float(mask[row : row + side, col : col + side].mean())
        if fraction >= MIN_FOREGROUND:
            return row, col, side
        if fraction > best_fraction:
            best, best_fraction = (row, col, side), fraction
    return best


def make_view(
    frames: tuple[Image.Image, ...],
    mask: np.ndarray,
    zoom: tuple[float, float],
    flips: str,
    rng: np.random.Generator,
) -> View:
    """Crop a random frame/region, resize to VIEW_SIZE and flip where `flips` allows.

    `frames` are "RGB" or "F" (grayscale float) images; `mask` is their anatomy mask.
    """
    frame = frames[int(rng.integers(0, len(frames)))]
    row, col, side = random_crop_box(mask, zoom, rng)
    box = (col, row, col + side, row + side)
    resized = np.asarray(frame.resize((VIEW_SIZE, VIEW_SIZE), Image.BILINEAR, box=box))
    if frame.mode == "RGB":
        pixels = resized.astype(np.float32) / 255.0
    else:
        pixels = np.clip(resized, 0.0, 1.0)[..., None]
    nearest = ((np.arange(VIEW_SIZE) + 0.5) * side / VIEW_SIZE).astype(int)
    view_mask = mask[row + nearest][:, col + nearest]
    flip_lr, flip_ud = rng.random() < 0.5, rng.random() < 0.5
    if "h" in flips and flip_lr:
        pixels, view_mask = pixels[:, ::-1], view_mask[:, ::-1]
    if "v" in flips and flip_ud:
        pixels, view_mask = pixels[::-1], view_mask[::-1]
    return View(np.ascontiguousarray(pixels), np.ascontiguousarray(view_mask))


def jitter(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma, contrast, brightness, colour-balance jitter and sensor noise (pointwise only)."""
    gamma = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    contrast = rng.uniform(0.9, 1.1)
    brightness = rng.uniform(-0.04, 0.04)
    gains = rng.uniform(0.96, 1.04, size=3)
    sigma = rng.uniform(0.004, 0.02)
    noise = rng.standard_normal(size=pixels.shape[:2] + (1,), dtype=np.float32) * sigma
    levels = np.linspace(0.0, 1.0, LUT_LEVELS, dtype=np.float32)  # a lookup table is fast
    table = (np.power(levels, gamma) - 0.5) * contrast + 0.5 + brightness
    index = (pixels * (LUT_LEVELS - 1) + 0.5).astype(np.int16)
    out = table.astype(np.float32)[index]
    if pixels.shape[-1] == 3:
        out *= gains.astype(np.float32)
    out += noise
    return np.clip(out, 0.0, 1.0, out=out)


def to_rgb_image(pixels: np.ndarray) -> Image.Image:
    """Float [0, 1] view -> 8-bit RGB PIL image (grayscale replicated to three channels)."""
    data = np.round(pixels * 255.0).astype(np.uint8)
    if data.shape[-1] == 1:
        data = np.repeat(data, 3, axis=-1)
    return Image.fromarray(data)

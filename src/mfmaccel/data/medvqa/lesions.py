"""Synthetic lesions with recorded ground truth, drawn onto real anatomy.

A lesion is a soft-edged, slightly irregular blob whose intensity is set relative to the local
tissue (a CT/MR lesion may be hypo- or hyper-dense, an ultrasound nodule is hypoechoic, a bone
scan hot spot is bright, a fundus lesion is a haemorrhage or an exudate, a histology lesion is a
dense stained nodule), with its own texture. Lesions sit inside the anatomy mask, never touch
each other, and are only kept when their contrast is clearly visible. Planning reads the
unpainted view and painting is separate, so a view can be rebuilt without its lesions (tests
use that to check the ground truth against the pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from mfmaccel.data.medvqa.questions import quadrant_of

RADIUS_RANGE = (8.0, 22.0)  # nominal radius in pixels of a 224 x 224 view
EXTENT = 1.25  # the blob's outer edge lies within EXTENT * radius of its centre
MIN_CONTRAST = 0.15  # smallest accepted intensity change at the lesion core (of 1.0)
GAP = 12.0  # pixels kept between two lesions' outer edges


@dataclass
class Lesion:
    """Ground truth of one inserted lesion in view coordinates."""

    cx: float
    cy: float
    radius: float
    quadrant: str
    core: np.ndarray  # bool (H, W): where the blob is at least half opaque
    support: np.ndarray  # bool (H, W): every pixel the blob changes


@dataclass
class LesionPlan:
    """Everything needed to paint one lesion; built from the unpainted view."""

    lesion: Lesion
    box: tuple[int, int, int, int]  # y0, y1, x0, x1 of the patch
    alpha: np.ndarray  # (h, w) opacity
    target: np.ndarray  # (channels,) intensity the blob tends to
    strength: float  # how far towards `target` the core goes
    texture: np.ndarray  # (h, w) additive texture


def interior_distance(mask: np.ndarray) -> np.ndarray:
    """Distance (a slight underestimate) of each pixel to the background or the image edge.

    Computed at half resolution: placement only needs it to within a pixel or two.
    """
    half = mask[::2, ::2].copy()
    half[0, :] = half[-1, :] = half[:, 0] = half[:, -1] = False
    coarse = ndimage.distance_transform_edt(half) * 2.0 - 2.0
    full = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[: mask.shape[0], : mask.shape[1]]
    return np.where(mask, np.maximum(full, 0.0), 0.0)


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    return tuple(np.indices((size, size), dtype=np.float32))  # type: ignore[return-value]


def _allowed_centres(
    dist: np.ndarray, extent: float, quadrant: str | None, placed: list[tuple[float, float, float]]
) -> np.ndarray:
    size = dist.shape[0]
    ok = dist >= extent + 2.0
    yy, xx = _grid(size)
    if quadrant is not None:
        margin = 0.6 * extent + 2.0
        half = size / 2
        ok &= (yy < half - margin) if quadrant.startswith("upper") else (yy >= half + margin)
        ok &= (xx < half - margin) if quadrant.endswith("left") else (xx >= half + margin)
    for px, py, pextent in placed:
        ok &= (xx - px) ** 2 + (yy - py) ** 2 >= (pextent + extent + GAP) ** 2
    return np.argwhere(ok)


def place_centres(
    dist: np.ndarray, count: int, quadrant: str | None, rng: np.random.Generator
) -> list[tuple[float, float, float]] | None:
    """(x, y, radius) for `count` non-touching lesions inside the anatomy, or None."""
    placed: list[tuple[float, float, float]] = []
    radii: list[float] = []
    for _ in range(count):
        radius = rng.uniform(*RADIUS_RANGE)
        while True:
            candidates = _allowed_centres(dist, EXTENT * radius, quadrant, placed)
            if len(candidates):
                y, x = candidates[int(rng.integers(0, len(candidates)))]
                placed.append((float(x), float(y), EXTENT * radius))
                radii.append(radius)
                break
            if radius <= RADIUS_RANGE[0]:
                return None
            radius = max(RADIUS_RANGE[0], radius * 0.7)
    return [(x, y, r) for (x, y, _), r in zip(placed, radii, strict=True)]


def _blob(size: int, cx: float, cy: float, radius: float, rng: np.random.Generator):
    """Soft, slightly irregular elliptical opacity on a patch around (cx, cy)."""
    aspect = np.sqrt(rng.uniform(0.8, 1.25))
    theta = rng.uniform(0.0, np.pi)
    amps = rng.uniform(0.0, 0.06, size=2)
    phases = rng.uniform(0.0, 2 * np.pi, size=2)
    soft = rng.uniform(1.0, 2.5)
    reach = int(np.ceil(EXTENT * radius + 5 * soft)) + 1
    y0, y1 = max(0, int(cy) - reach), min(size, int(cy) + reach + 1)
    x0, x1 = max(0, int(cx) - reach), min(size, int(cx) + reach + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    rho = np.hypot(u / aspect, v * aspect)
    phi = np.arctan2(v, u)
    wobble = amps[0] * np.cos(2 * phi + phases[0]) + amps[1] * np.cos(3 * phi + phases[1])
    edge = radius * (1 + wobble)
    alpha = 1.0 / (1.0 + np.exp(np.clip((rho - edge) / soft, -50, 50)))
    alpha[alpha < 1e-4] = 0.0  # exactly zero outside, so `support` is exact
    return alpha.astype(np.float32), (y0, y1, x0, x1)


def _target(mean: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    """Intensity (per channel) the lesion tends to, relative to the local tissue `mean`."""
    kind = rng.random()
    step = rng.uniform(0.22, 0.4)
    if style == "both":  # CT / MRI: hypo- or hyper-intense, whichever stays in range
        sign = 1.0 if kind < 0.5 else -1.0
        if not 0.03 <= float(np.max(mean + sign * step)) <= 0.97:
            sign = -sign
        return np.clip(mean + sign * step, 0.0, 1.0)
    if style == "dark":  # ultrasound: hypoechoic nodule
        return np.clip(mean - step, 0.0, 1.0)
    if style == "bright":  # bone scan hot spot
        return np.clip(mean + step + 0.15, 0.0, 1.0)
    if style == "echogenic":  # echocardiography: echogenic mass (thrombus, tumour)
        return np.clip(mean + step + 0.1, 0.0, 1.0)
    if style == "fundus":  # haemorrhage (dark red) or exudate (yellow-white)
        if kind < 0.5:
            return mean * np.array([0.55, 0.35, 0.35])
        return np.clip(mean + np.array([0.35, 0.32, 0.12]), 0.0, 1.0)
    if style == "ihc":  # DAB-dense (brown) or haematoxylin-dense (blue-purple) nodule
        colour = [0.42, 0.26, 0.12] if kind < 0.5 else [0.28, 0.24, 0.48]
        return np.array(colour) * rng.uniform(0.85, 1.15)
    raise ValueError(f"unknown lesion style {style!r}")


def plan_lesion(
    pixels: np.ndarray, *, cx: float, cy: float, radius: float, style: str,
    rng: np.random.Generator,
) -> LesionPlan | None:
    """Design one lesion on the unpainted view; None when it would not be clearly visible."""
    size = pixels.shape[0]
    alpha, (y0, y1, x0, x1) = _blob(size, cx, cy, radius, rng)
    core_patch = alpha >= 0.5
    mean = pixels[y0:y1, x0:x1][core_patch].mean(axis=0)
    target = _target(mean, style, rng)
    strength = rng.uniform(0.7, 0.9)
    noise = ndimage.gaussian_filter(
        rng.standard_normal(size=alpha.shape, dtype=np.float32), rng.uniform(1.0, 2.0)
    )
    speckled = style in ("dark", "echogenic")  # ultrasound
    amplitude = rng.uniform(0.05, 0.09) if speckled else rng.uniform(0.02, 0.05)
    texture = noise / (noise.std() + 1e-6) * amplitude
    if strength * float(np.max(np.abs(target - mean))) < MIN_CONTRAST:
        return None
    core = np.zeros((size, size), dtype=bool)
    support = np.zeros((size, size), dtype=bool)
    core[y0:y1, x0:x1] = core_patch
    support[y0:y1, x0:x1] = alpha > 0
    lesion = Lesion(cx, cy, radius, quadrant_of(cx, cy, size), core, support)
    return LesionPlan(lesion, (y0, y1, x0, x1), alpha, target.astype(np.float32), strength,
                      texture)


def plan_lesions(
    pixels: np.ndarray, mask: np.ndarray, *, count: int, quadrant: str | None, style: str,
    rng: np.random.Generator, tries: int = 6,
) -> list[LesionPlan] | None:
    """Plans for `count` visible lesions (in `quadrant` if given), or None if none fit."""
    dist = interior_distance(mask)
    for _ in range(tries):
        centres = place_centres(dist, count, quadrant, rng)
        if centres is None:
            return None
        plans = [plan_lesion(pixels, cx=x, cy=y, radius=r, style=style, rng=rng)
                 for x, y, r in centres]
        if all(p is not None for p in plans):
            return plans  # type: ignore[return-value]
    return None


def paint(pixels: np.ndarray, plans: list[LesionPlan]) -> np.ndarray:
    """A copy of `pixels` with the planned lesions drawn in."""
    out = pixels.copy()
    for plan in plans:
        y0, y1, x0, x1 = plan.box
        patch = out[y0:y1, x0:x1]
        alpha = plan.alpha[..., None]
        blended = patch + alpha * plan.strength * (plan.target - patch)
        out[y0:y1, x0:x1] = np.clip(blended + alpha * plan.texture[..., None], 0.0, 1.0)
    return out

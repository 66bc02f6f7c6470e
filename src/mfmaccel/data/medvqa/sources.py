"""The real medical source images of the offline benchmark and how to read them.

Every image ships inside an installed package (scikit-image's bundled data, pydicom's bundled
test files), so the benchmark builds with no network. Each `SourceSpec` records what the image
really is (modality, organ where known), which splits it may appear in (sources of one modality
are kept apart between train and test), the region to keep (burned-in text and known real
findings are cropped away) and how lesions may be drawn on it. docs/data.md lists origins and
licences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

ALL = ("train", "val", "test")
MAX_SIDE = 640  # sources are downscaled once so that crops stay cheap to resize
BODY_FRACTION = 0.4  # of the Otsu level: everything brighter counts as anatomy


@dataclass(frozen=True)
class SourceSpec:
    """One real image (or cine clip) and the facts the question generator may rely on."""

    source_id: str
    modality: str
    organ: str | None  # None: the region is not known well enough to ask about it
    splits: tuple[str, ...]
    load: Callable[[], np.ndarray]  # -> float32 (frames, H, W, channels) in [0, 1]
    roi: tuple[int, int, int, int] | None = None  # rows r0:r1, cols c0:c1 kept
    lesion_style: str | None = None  # None: no lesion questions (real findings, or no anatomy)
    mask_mode: str = "bright"  # foreground: "bright" (Otsu), "dark" (brightfield), "full"
    mask_blur: float = 0.01  # smoothing before thresholding, as a fraction of the short side
    zoom: tuple[float, float] = (0.7, 1.0)  # crop side as a fraction of the shorter side
    flips: str = "h"  # "" (laterality matters or is unknown), "h" (left-right), "hv" (any)


class MissingSourceError(RuntimeError):
    """A bundled file is absent: the installed package differs from the pinned version."""


def _pydicom_file(name: str) -> Path:
    """Path of a file bundled in pydicom's test_files; never triggers pydicom's downloader."""
    import pydicom.data

    path = Path(pydicom.data.__file__).parent / "test_files" / name
    if not path.is_file():
        raise MissingSourceError(f"{path} is missing: reinstall pydicom==3.0.2")
    return path


def _skimage(function: str, file_name: str) -> np.ndarray:
    """Call a skimage.data loader after checking its file is bundled (so it cannot download)."""
    import skimage.data

    path = Path(skimage.data.__file__).parent / file_name
    if not path.is_file():
        raise MissingSourceError(f"{path} is missing: reinstall scikit-image==0.26.0")
    return np.asarray(getattr(skimage.data, function)())


def _as_frames(pixels: np.ndarray, multi_frame: bool) -> np.ndarray:
    """Normalise to (frames, H, W, channels) float32."""
    arr = np.asarray(pixels, dtype=np.float32)
    if not multi_frame:
        arr = arr[None]
    if arr.ndim == 3:
        arr = arr[..., None]
    return arr


def _window(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _dicom_gray(name: str, center: float, width: float) -> Callable[[], np.ndarray]:
    """Grayscale DICOM: modality LUT (e.g. CT Hounsfield units), then a display window."""

    def load() -> np.ndarray:
        import pydicom
        from pydicom.pixels import apply_modality_lut

        ds = pydicom.dcmread(_pydicom_file(name))
        values = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
        return _as_frames(_window(values, center - width / 2, center + width / 2), False)

    return load


def _dicom_rgb(name: str, multi_frame: bool = False) -> Callable[[], np.ndarray]:
    """Colour DICOM (ultrasound); pydicom converts YBR to RGB itself."""

    def load() -> np.ndarray:
        import pydicom

        ds = pydicom.dcmread(_pydicom_file(name))
        return _as_frames(ds.pixel_array, multi_frame) / 255.0

    return load


def _skimage_loader(function: str, file_name: str, scale: float) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        return _as_frames(_skimage(function, file_name), False) / scale

    return load


SOURCES: tuple[SourceSpec, ...] = (
    # CT: four sources, so train / val / test each get their own.
    SourceSpec("pydicom/CT_small.dcm", "ct", "chest", ("train",),
               _dicom_gray("CT_small.dcm", 40, 400), lesion_style="both", zoom=(0.8, 1.0),
               flips=""),
    SourceSpec("skimage/shepp_logan_phantom", "ct", "head", ("train",),
               _skimage_loader("shepp_logan_phantom", "phantom.png", 1.0),
               lesion_style="both"),
    SourceSpec("pydicom/693_J2KI.dcm", "ct", "head", ("val",),
               _dicom_gray("693_J2KI.dcm", 40, 100), lesion_style="both"),
    SourceSpec("pydicom/J2K_pixelrep_mismatch.dcm", "ct", "head", ("test",),
               _dicom_gray("J2K_pixelrep_mismatch.dcm", 40, 100), lesion_style="both"),
    # MRI: two sources; the abdomen slice has real liver lesions, cropped away by the roi.
    SourceSpec("pydicom/examples_overlay.dcm", "mri", "abdomen", ("train",),
               _dicom_gray("examples_overlay.dcm", 450, 790), roi=(20, 290, 215, 478),
               lesion_style="both", flips=""),
    SourceSpec("pydicom/MR_small.dcm", "mri", None, ("val", "test"),
               _dicom_gray("MR_small.dcm", 600, 1600), lesion_style="both", mask_mode="full",
               zoom=(0.85, 1.0), flips=""),
    # Ultrasound: two sources; rois drop burned-in text and colour scale bars.
    SourceSpec("pydicom/examples_ybr_color.dcm", "ultrasound", "heart", ("train",),
               _dicom_rgb("examples_ybr_color.dcm", multi_frame=True), roi=(25, 224, 45, 292),
               lesion_style="echogenic", mask_blur=0.06, flips=""),
    SourceSpec("pydicom/examples_jpeg2k.dcm", "ultrasound", "lymph node", ("val", "test"),
               _dicom_rgb("examples_jpeg2k.dcm"), roi=(108, 335, 48, 595),
               lesion_style="dark", mask_mode="full"),
    # Fundus photography: two sources; microaneurysms shows real lesions (no lesion questions).
    SourceSpec("skimage/retina", "fundus photograph", "eye", ("train",),
               _skimage_loader("retina", "retina.jpg", 255.0), lesion_style="fundus"),
    SourceSpec("skimage/microaneurysms", "fundus photograph", "eye", ("val", "test"),
               _skimage_loader("microaneurysms", "microaneurysms.png", 255.0),
               mask_mode="full", zoom=(0.8, 1.0), flips="hv"),
    # Single-source modalities: in every split, with different crops and lesions.
    SourceSpec("skimage/immunohistochemistry", "histology", "colon", ALL,
               _skimage_loader("immunohistochemistry", "ihc.png", 255.0),
               lesion_style="ihc", mask_mode="dark", zoom=(0.5, 1.0), flips="hv"),
    SourceSpec("pydicom/JPEG2000.dcm", "nuclear medicine", None, ALL,
               _dicom_gray("JPEG2000.dcm", 60, 120), roi=(80, 860, 0, 256),
               lesion_style="bright", zoom=(0.55, 1.0)),
    SourceSpec("skimage/cell", "phase microscopy", None, ALL,
               _skimage_loader("cell", "cell.png", 255.0), mask_mode="full",
               zoom=(0.5, 1.0), flips="hv"),
)

SOURCE_BY_ID: dict[str, SourceSpec] = {s.source_id: s for s in SOURCES}


def sources_for_split(split: str) -> list[SourceSpec]:
    """The sources that may appear in `split`, in a fixed order."""
    return [s for s in SOURCES if split in s.splits]


def _resize_channels(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, channels) float image to size=(width, height), channel by channel."""
    planes = [Image.fromarray(np.ascontiguousarray(image[..., c])) for c in range(image.shape[-1])]
    channels = [np.asarray(plane.resize(size, Image.BILINEAR)) for plane in planes]
    return np.stack(channels, axis=-1)


def _downscale(frames: np.ndarray) -> np.ndarray:
    _, h, w, _ = frames.shape
    factor = MAX_SIDE / min(h, w)
    if factor >= 1.0:
        return frames
    size = (round(w * factor), round(h * factor))
    return np.stack([_resize_channels(f, size) for f in frames]).astype(np.float32)


@cache
def source_pixels(source_id: str) -> np.ndarray:
    """Decoded, windowed, roi-cropped pixels (frames, H, W, channels) in [0, 1]; cached."""
    spec = SOURCE_BY_ID[source_id]
    frames = spec.load()
    if spec.roi is not None:
        r0, r1, c0, c1 = spec.roi
        frames = frames[:, r0:r1, c0:c1]
    frames = _downscale(frames)
    frames.setflags(write=False)
    return frames


@cache
def source_images(source_id: str) -> tuple[Image.Image, ...]:
    """One PIL image per frame ("RGB" for colour, "F" for grayscale) for fast crop-resizing."""
    frames = source_pixels(source_id)
    if frames.shape[-1] == 3:
        return tuple(Image.fromarray(np.round(f * 255).astype(np.uint8)) for f in frames)
    return tuple(Image.fromarray(np.ascontiguousarray(f[..., 0])) for f in frames)


@cache
def source_mask(source_id: str) -> np.ndarray:
    """Foreground (anatomy) mask of a source, so lesions never land on the background."""
    spec = SOURCE_BY_ID[source_id]
    frames = source_pixels(source_id)
    gray = frames.mean(axis=(0, 3))
    if spec.mask_mode == "full":
        mask = np.ones(gray.shape, dtype=bool)
    else:
        from skimage.filters import threshold_otsu

        smooth = ndimage.gaussian_filter(gray, sigma=max(1.0, spec.mask_blur * min(gray.shape)))
        level = threshold_otsu(smooth)
        # brightfield: tissue is darker than the empty slide; otherwise Otsu may split bright
        # organs from the rest of the body, so everything but the dark background is kept
        dark = spec.mask_mode == "dark"
        mask = smooth < level if dark else smooth > BODY_FRACTION * level
        mask = ndimage.binary_fill_holes(ndimage.binary_opening(mask, iterations=2))
    mask.setflags(write=False)
    return mask

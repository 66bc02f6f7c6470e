"""The usable images of the pydicom-data package, with the facts their DICOM headers state.

pydicom-data (1.0.0, MIT) holds 68 files but only a handful of distinct images: most are one
image in several encodings (uncompressed, JPEG 2000 lossless and lossy, RLE, big endian, more
frames). A split must keep every encoding of an image together, so `DICOM_IMAGES` lists each
distinct image once with all its files, and assigns the image (not a file) to one split. The
list is fixed in code, so the benchmark does not depend on which files happen to decode; the
tests decode every listed file, check that the encodings of one image are near-duplicates and
that different images are not, and that the modality and body part below are what the headers
say. The package is found with importlib and never imported.

Files left out are in `LEFT_OUT`, each with its reason.

Nuclear medicine has one distinct image in everything we have (the NM1 bone scan), so it
cannot be in both train and test without the same image in two splits: it is train only (via
the current medvqa source `pydicom/JPEG2000.dcm`). X-ray, CT, MRI and ultrasound each have
images in train and in test.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from mfmaccel.errors import UserInputError

PACKAGE = "data_store"  # the import name of the pydicom-data distribution
DISTRIBUTION = "pydicom-data==1.0.0"
INSTALL_HINT = f"run `make install` (or `pip install --no-deps {DISTRIBUTION}`)"
MAX_SIDE = 640  # the shorter side is downscaled to this once, so crops stay cheap

# DICOM Modality (0008,0060) -> our answer word.
MODALITY_WORDS = {"CR": "x-ray", "DX": "x-ray", "MR": "mri", "CT": "ct", "US": "ultrasound",
                  "NM": "nuclear medicine"}
# Words of BodyPartExamined (0018,0015), else of StudyDescription / SeriesDescription -> organ.
# EXTREMITY and WHOLE BODY say too little to name an organ, so they map to nothing.
BODY_WORDS = {"CHEST": "chest", "THORAX": "chest", "HEAD": "head", "BRAIN": "head",
              "ABDOMEN": "abdomen", "PANCREAS": "abdomen", "LIVER": "abdomen",
              "SHOULDER": "shoulder", "TIBIA": "leg", "ECHOCARDIOGRAM": "heart",
              "PELVIS": "pelvis"}


@dataclass(frozen=True)
class DicomImage:
    """One distinct image of pydicom-data: all the files that encode it, what it shows, and
    where it goes. `same_as` names the current medvqa source (sources.py) showing the same
    image; such an image is read from there and takes that source's medvqa2 split, so `read`,
    `split` and the display fields are unused for it."""

    image_id: str
    files: tuple[str, ...]
    modality: str
    organ: str | None
    organ_from: str  # where the organ comes from, when not from the header words above
    split: str | None = None
    same_as: str | None = None
    read: str | None = None  # the file decoded: the uncompressed original where there is one
    window: tuple[float, float] | None = None  # grayscale display range after the modality LUT
    roi: tuple[int, int, int, int] | None = None  # rows r0:r1, cols c0:c1 kept (text removed)
    zoom: tuple[float, float] = (0.7, 1.0)  # crop side as a fraction of the shorter side
    flips: str = ""  # "" keeps laterality; "h" allows left-right flips


def _encodings(stem: str) -> tuple[str, ...]:
    return tuple(f"{stem}_{kind}.dcm" for kind in ("J2KI", "J2KR", "UNCI", "UNCR"))


DICOM_IMAGES: tuple[DicomImage, ...] = (
    # New images: not among the current medvqa sources.
    DicomImage("pydicom-data/RG1", _encodings("RG1"), "x-ray", "chest", "header",
               split="test", read="RG1_UNCR.dcm", window=(2000, 16000)),
    DicomImage("pydicom-data/RG3", _encodings("RG3"), "x-ray", "leg", "header", split="train",
               read="RG3_UNCR.dcm", window=(38, 1062), zoom=(0.5, 1.0)),
    DicomImage("pydicom-data/MR2", _encodings("MR2"), "mri", "shoulder", "header",
               split="train", read="MR2_UNCR.dcm", window=(0, 2000)),
    DicomImage("pydicom-data/emri_small",
               ("emri_small.dcm", "emri_small_RLE.dcm", "emri_small_big_endian.dcm",
                "emri_small_jpeg_2k_lossless.dcm"), "mri", "head", "header", split="test",
               read="emri_small.dcm", window=(0, 400), zoom=(0.85, 1.0)),
    DicomImage("pydicom-data/explicit_VR-UN", ("explicit_VR-UN.dcm",), "ct", "abdomen",
               "header", split="test", read="explicit_VR-UN.dcm", window=(-160, 240)),
    DicomImage("pydicom-data/gdcm-US-ALOKA-16",
               ("gdcm-US-ALOKA-16.dcm", "gdcm-US-ALOKA-16_big.dcm"), "ultrasound", "pelvis",
               "burned-in label '3:PELVIS' (the header names no body part)", split="train",
               read="gdcm-US-ALOKA-16.dcm", roi=(100, 410, 45, 625), flips="h"),
    DicomImage("pydicom-data/color-pl", ("color-pl.dcm", "color-px.dcm"), "ultrasound",
               "heart", "header", split="test", read="color-pl.dcm", roi=(0, 120, 0, 225),
               zoom=(0.8, 1.0)),
    # The same images as current medvqa sources: read from there, kept in their split.
    DicomImage("pydicom-data/693", ("693_J2KR.dcm", "693_UNCI.dcm", "693_UNCR.dcm"), "ct",
               "head", "current source (the header names no body part)",
               same_as="pydicom/693_J2KI.dcm"),
    DicomImage("pydicom-data/US1", _encodings("US1"), "ultrasound", "lymph node",
               "current source (burned-in label 'LYMPH NODE')",
               same_as="pydicom/examples_jpeg2k.dcm"),
    DicomImage("pydicom-data/color3d", ("color3d_jpeg_baseline.dcm",), "ultrasound", "heart",
               "current source (apical four-chamber view)",
               same_as="pydicom/examples_ybr_color.dcm"),
    # examples_overlay.dcm is rows 100:400 of this file, pixel for pixel (tests check it)
    DicomImage("pydicom-data/MR-SIEMENS", ("MR-SIEMENS-DICOM-WithOverlays.dcm",), "mri",
               "abdomen", "header", same_as="pydicom/examples_overlay.dcm"),
    DicomImage("pydicom-data/NM1", ("JPEG2000_UNC.dcm",), "nuclear medicine", None,
               "header (WHOLE BODY: no single organ)", same_as="pydicom/JPEG2000.dcm"),
)

DICOM_BY_ID: dict[str, DicomImage] = {image.image_id: image for image in DICOM_IMAGES}

_UNREADABLE = "JPEG Lossless: no installed decoder (pylibjpeg / gdcm) reads it"
_PATTERN = "a colour test pattern, not a medical image"
_OB = ("Philips obstetric ultrasound: a black sector with a thin near-field strip and "
       "burned-in text (the 2-frame files' second frame is a flat blue fill): no anatomy")
LEFT_OUT: dict[str, str] = {
    "JPEG-LL.dcm": _UNREADABLE + " (and it is the NM1 bone scan again)",
    "JPGLosslessP14SV1_1s_1f_8b.dcm": _UNREADABLE,
    "bad_sequence.dcm": _UNREADABLE,
    "emri_small_jpeg_ls_lossless.dcm": "JPEG-LS: no installed decoder reads it",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "truncated: no pixel data",
    "OT-PAL-8-face.dcm": "not a DICOM file (no preamble or meta header); a photograph of a face",
    **{name: _PATTERN for name in (
        "SC_rgb.dcm", "SC_rgb_16bit.dcm", "SC_rgb_16bit_2frame.dcm", "SC_rgb_2frame.dcm",
        "SC_rgb_32bit.dcm", "SC_rgb_32bit_2frame.dcm", "SC_rgb_dcmtk_ebcr_dcmd.dcm",
        "SC_rgb_dcmtk_ebcyn1_dcmd.dcm", "SC_rgb_dcmtk_ebcyn2_dcmd.dcm",
        "SC_rgb_dcmtk_ebcynp_dcmd.dcm", "SC_rgb_dcmtk_ebcys2_dcmd.dcm",
        "SC_rgb_dcmtk_ebcys4_dcmd.dcm", "SC_rgb_expb.dcm", "SC_rgb_expb_16bit.dcm",
        "SC_rgb_expb_16bit_2frame.dcm", "SC_rgb_expb_2frame.dcm", "SC_rgb_expb_32bit.dcm",
        "SC_rgb_expb_32bit_2frame.dcm", "SC_rgb_gdcm2k_uncompressed.dcm",
        "SC_ybr_full_uncompressed.dcm")},
    "mlut_18.dcm": "a modality-LUT test chart, not a medical image",
    "vlut_04.dcm": "a VOI-LUT test chart, not a medical image",
    "liver.dcm": "DICOM SEG: a binary liver mask, not an image",
    "liver_expb.dcm": "DICOM SEG: a binary liver mask, not an image",
    **{name: _OB for name in (
        "OBXXXX1A.dcm", "OBXXXX1A_2frame.dcm", "OBXXXX1A_expb.dcm", "OBXXXX1A_expb_2frame.dcm",
        "OBXXXX1A_rle.dcm", "OBXXXX1A_rle_2frame.dcm")},
    "eCT_Supplemental.dcm": "a derived CT perfusion map (rCBF, 'Perfusion^MCA Stroke' from a "
                            "made-up scanner): a thresholded parameter map, not a CT image",
}


def package_folder() -> Path:
    """The data folder of the installed pydicom-data package (found, never imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError(f"the {DISTRIBUTION} data package is not installed: {INSTALL_HINT}")
    return Path(spec.submodule_search_locations[0]) / "data"


def dicom_path(name: str) -> Path:
    """A listed file of pydicom-data; a missing one means the install is broken."""
    path = package_folder() / name
    if not path.is_file():
        raise UserInputError(f"{path} is missing: reinstall {DISTRIBUTION} ({INSTALL_HINT})")
    return path


def read_dataset(name: str, *, pixels: bool = True):
    """The parsed DICOM file `name` of pydicom-data; an unreadable one names the package."""
    import pydicom

    path = dicom_path(name)
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except Exception as err:  # pydicom raises many types for a damaged file
        raise UserInputError(
            f"{path} cannot be read ({type(err).__name__}): reinstall {DISTRIBUTION} "
            f"({INSTALL_HINT})") from None


def header_facts(name: str) -> tuple[str | None, str | None]:
    """(modality, organ) in our answer words, read from the header of file `name`: Modality,
    then BodyPartExamined, else the words of StudyDescription and SeriesDescription."""
    ds = read_dataset(name, pixels=False)
    modality = MODALITY_WORDS.get(str(ds.get("Modality", "")).upper())
    texts = [ds.get(key, "") for key in ("BodyPartExamined", "StudyDescription",
                                          "SeriesDescription")]
    for text in texts:
        for word in str(text).upper().replace("^", " ").split():
            if word in BODY_WORDS:
                return modality, BODY_WORDS[word]
    return modality, None


def first_frame(ds) -> np.ndarray:
    """The first frame's values, float32 (H, W, channels): colour scaled to [0, 1] (pydicom
    turns YBR into RGB; a palette is applied), grayscale after the modality LUT (e.g. CT
    Hounsfield units). Only that frame is decoded."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        ds.pixel_array_options(index=0)
    pixels = ds.pixel_array
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        return (rgb / np.iinfo(rgb.dtype).max).astype(np.float32)
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        return (pixels / np.iinfo(pixels.dtype).max).astype(np.float32)
    return apply_modality_lut(pixels, ds).astype(np.float32)[..., None]


def header_window(ds) -> tuple[float, float] | None:
    """(low, high) of the header's first display window (WindowCenter / WindowWidth)."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    center, width = _first(center), _first(width)
    return (center - width / 2, center + width / 2) if width > 0 else None


def _first(value) -> float:
    """A number that may be multi-valued in DICOM (several windows): its first value."""
    return float(value[0] if isinstance(value, Sequence) else value)


def to_display(ds, values: np.ndarray, window: tuple[float, float] | None = None
               ) -> np.ndarray:
    """`first_frame` values -> [0, 1] for display. Grayscale is windowed: `window`, else the
    header's, else the value range; MONOCHROME1 (bright = low) is inverted."""
    if values.shape[-1] == 3:
        return values
    low, high = window or header_window(ds) or (float(values.min()), float(values.max()))
    shown = np.clip((values - low) / max(high - low, 1e-6), 0.0, 1.0)
    return 1.0 - shown if str(ds.get("PhotometricInterpretation")) == "MONOCHROME1" else shown


def _downscaled(pixels: np.ndarray) -> np.ndarray:
    """The shorter side at most MAX_SIDE, channel by channel."""
    h, w, _ = pixels.shape
    factor = MAX_SIDE / min(h, w)
    if factor >= 1.0:
        return pixels
    size = (round(w * factor), round(h * factor))
    planes = [Image.fromarray(np.ascontiguousarray(pixels[..., c])).resize(size, Image.BILINEAR)
              for c in range(pixels.shape[-1])]
    return np.stack([np.asarray(plane) for plane in planes], axis=-1)


@cache
def dicom_pixels(image_id: str) -> np.ndarray:
    """Windowed, roi-cropped, downscaled float32 (H, W, channels) in [0, 1] of a new image
    (one with `read`); cached, read-only."""
    image = DICOM_BY_ID[image_id]
    if image.read is None:
        raise ValueError(f"{image_id} is read from the current source {image.same_as}")
    ds = read_dataset(image.read)
    try:
        values = first_frame(ds)
    except Exception as err:  # a decoder error on a listed file: the install is damaged
        raise UserInputError(
            f"{dicom_path(image.read)}: pixel data cannot be decoded ({type(err).__name__}); "
            f"reinstall {DISTRIBUTION} ({INSTALL_HINT})") from None
    pixels = to_display(ds, values, image.window)
    if image.roi is not None:
        r0, r1, c0, c1 = image.roi
        pixels = pixels[r0:r1, c0:c1]
    pixels = _downscaled(np.ascontiguousarray(pixels, dtype=np.float32))
    pixels.setflags(write=False)
    return pixels


def images_for_split(split: str) -> list[DicomImage]:
    """The new images (read here, not duplicates of a current source) assigned to `split`."""
    return [image for image in DICOM_IMAGES if image.read is not None and image.split == split]

"""Load a user's medical VQA data (VQA-RAD, SLAKE or PathVQA style) from disk.

These datasets cannot be downloaded here, so users bring them: a JSON list of records next to
an image folder. Only closed-ended questions are kept (yes/no, or answer_type CLOSED), so they
can be scored like the offline benchmark by choosing among `answer_set`.
"""

from __future__ import annotations

import json
import math
import re
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, UnidentifiedImageError

from mfmaccel.data.medvqa.dicomset import first_frame, to_display
from mfmaccel.data.medvqa.sample import SPLITS, VQASample
from mfmaccel.data.medvqa.views import to_rgb_image
from mfmaccel.errors import UserInputError

IMAGE_KEYS = ("image_name", "img_name", "image")  # VQA-RAD, SLAKE, PathVQA-style
TYPE_KEYS = ("question_type", "content_type")  # VQA-RAD, SLAKE
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm")
DICOM_SUFFIXES = (".dcm", ".dicom")
PIXEL_KEYS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Modes Pillow turns into RGB faithfully. Others would come out wrong without an error:
# 16-bit, 32-bit and float pixels are clipped at 255 (a white or black picture), LAB and HSV
# are not colour-converted.
RGB_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK",
                       "YCbCr"})
SPLIT_NAMES = {
    "train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
    "validation": "val", "dev": "val", "test": "test",
}
YES_NO = ("yes", "no")
MAX_IMAGE_PIXELS = 8192 * 8192  # 200 MB as RGB; medical VQA images are far smaller


@dataclass
class _Record:
    """One closed-ended English question read from a JSON file."""

    where: str  # "record 3 of train.json", for error messages
    image_name: str
    question: str
    answer: str
    question_type: str
    split: str | None


def _normalise(text: Any) -> str:
    """Canonical answer text: lower case, single spaces, no trailing full stop."""
    return re.sub(r"\s+", " ", str(text)).strip().lower().rstrip(".").strip()


def _split_from_name(stem: str) -> str | None:
    """train.json / validate.json / test.json (SLAKE) and similar names -> split."""
    for token in re.split(r"[^a-z]+", stem.lower()):
        if token in SPLIT_NAMES:
            return SPLIT_NAMES[token]
    return None


def _json_files(path: Path) -> tuple[Path, list[Path]]:
    """(image root, JSON files) for a folder or a single JSON file."""
    if not path.exists():
        raise UserInputError(
            f"VQA data path {path} does not exist: pass the folder holding the JSON file and images"
        )
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise UserInputError(f"{path} is not a .json file: pass the dataset folder or its JSON")
        return path.parent, [path]
    files = sorted(p for p in path.glob("*.json") if p.is_file())
    if not files:
        raise UserInputError(
            f"no JSON file found in {path}: expected a VQA-RAD/SLAKE/PathVQA-style JSON list "
            "of records next to the image folder"
        )
    return path, files


def _read_json(file: Path) -> list[Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserInputError(
            f"{file}: malformed JSON ({err.msg} at line {err.lineno}); fix or re-export the file"
        ) from None
    except UnicodeDecodeError:
        raise UserInputError(f"{file}: not UTF-8 text; re-save the JSON file as UTF-8") from None
    if not isinstance(data, list):
        found = type(data).__name__
        raise UserInputError(f"{file}: expected a JSON list of records, found a {found}")
    return data


def _require(raw: Any, keys: tuple[str, ...], where: str) -> Any:
    """The value of the first of `keys` present in `raw`, else a one-line error naming them."""
    for key in keys:
        if key in raw and raw[key] is not None and str(raw[key]).strip():
            return raw[key]
    wanted = " / ".join(repr(k) for k in keys)
    raise UserInputError(f"{where} has no {wanted} key (or it is empty); add it or drop the record")


def _record_split(raw: dict, file_split: str | None) -> str | None:
    if "split" in raw:
        return SPLIT_NAMES.get(_normalise(raw["split"]))
    if "phrase_type" in raw:  # VQA-RAD: freeform / para (train), test_freeform / test_para
        return "test" if _normalise(raw["phrase_type"]).startswith("test") else "train"
    return file_split


def _closed_records(file: Path, data: list[Any]) -> list[_Record]:
    """Validated closed-ended English records of one file."""
    file_split = _split_from_name(file.stem)
    records = []
    for index, raw in enumerate(data):
        where = f"record {index} of {file.name}"
        if not isinstance(raw, dict):
            raise UserInputError(f"{where} is not a JSON object; each record must be an object")
        image_name = str(_require(raw, IMAGE_KEYS, where)).strip()
        question = str(_require(raw, ("question",), where)).strip()
        answer = _normalise(_require(raw, ("answer",), where))
        if "q_lang" in raw and _normalise(raw["q_lang"]) != "en":
            continue  # SLAKE: keep English questions only
        closed = _normalise(raw.get("answer_type", "")) == "closed"
        if not (closed or answer in YES_NO):
            continue
        qtype = next((_normalise(raw[k]) for k in TYPE_KEYS if raw.get(k)), "") or "other"
        records.append(
            _Record(where, image_name, question, answer, qtype, _record_split(raw, file_split))
        )
    return records


def _answer_sets(records: list[_Record]) -> dict[str, list[str]]:
    """Per question type, the closed (non yes/no) answers seen in one file."""
    seen: dict[str, set[str]] = {}
    for rec in records:
        if rec.answer not in YES_NO:
            seen.setdefault(rec.question_type, set()).add(rec.answer)
    return {qtype: sorted(answers) for qtype, answers in seen.items()}


class _ImageFinder:
    """Finds an image named by a record under the root, its subfolders or theirs."""

    def __init__(self, root: Path) -> None:
        level1 = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        level2 = sorted(q for p in level1 for q in p.iterdir() if q.is_dir())
        self.root = root
        self.dirs = [root, *level1, *level2]
        self.images: dict[Path, Image.Image] = {}

    def _find(self, name: str) -> Path | None:
        relative = PurePosixPath(name.replace("\\", "/"))
        if relative.is_absolute() or ".." in relative.parts:
            return None
        names = [relative] if relative.suffix else [relative.with_suffix(s) for s in IMAGE_SUFFIXES]
        for folder in self.dirs:
            for candidate in names:
                path = folder / candidate
                if path.is_file():
                    return path
        return None

    def load(self, rec: _Record) -> Image.Image:
        path = self._find(rec.image_name)
        if path is None:
            raise UserInputError(
                f"{rec.where}: image {rec.image_name!r} not found under {self.root} or its "
                "subfolders; add the image or drop the record"
            )
        if path not in self.images:
            self.images[path] = decode_image(path)
        return self.images[path]


def decode_image(path: Path) -> Image.Image:
    """The image at `path` as RGB. Its size is read from the header first: one beyond
    MAX_IMAGE_PIXELS (a decompression bomb: a small file that decodes to gigabytes) is refused
    without decoding, as is a file that is not a readable image or whose pixels would not
    convert faithfully (16-bit, float, LAB). DICOM files are read by `decode_dicom`."""
    if _is_dicom(path):
        return decode_dicom(path)
    try:  # MAX_IMAGE_PIXELS is below PIL's own warning threshold: _check_pixels refuses first
        with Image.open(path) as image:
            _check_pixels(path, *image.size)
            _check_mode(path, image.mode)
            return image.convert("RGB")
    except Image.DecompressionBombError:
        raise UserInputError(_too_large(path)) from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError,
            zlib.error) as err:
        raise UserInputError(f"{path}: cannot read image ({err}); replace it") from None


def _check_mode(path: Path, mode: str) -> None:
    if mode not in RGB_MODES:
        raise UserInputError(
            f"{path}: image mode {mode} (16-bit, 32-bit, float or LAB/HSV pixels) is not "
            "supported; save it as an 8-bit grayscale or RGB PNG or JPEG")


def _is_dicom(path: Path) -> bool:
    """A .dcm / .dicom name, or the DICOM magic word after the 128-byte preamble."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as file:
            return file.read(132)[128:] == b"DICM"
    except OSError:  # unreadable: Pillow's attempt says so in one line
        return False


def decode_dicom(path: Path) -> Image.Image:
    """A DICOM image as RGB: its first frame, shown with the header's window (else its value
    range). A file without pixel data (a report, an RT plan, a truncated file) or with pixels
    no installed decoder reads is refused in one line."""
    import pydicom

    try:
        with warnings.catch_warnings():  # a truncated file also warns: the error says it all
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
    except Exception as err:  # pydicom raises many types for a damaged file
        raise UserInputError(f"{path}: not a readable DICOM file ({type(err).__name__}); "
                             "replace it, or export the image as PNG") from None
    if not any(key in ds for key in PIXEL_KEYS):
        raise UserInputError(
            f"{path}: DICOM file without pixel data (a report, plan or other non-image object, "
            "or a truncated file); point the record at an image, or export one as PNG")
    _check_pixels(path, int(ds.get("Columns", 0)), int(ds.get("Rows", 0)))
    try:
        values = first_frame(ds)
    except Exception as err:  # e.g. no decoder for the transfer syntax
        uid = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
        syntax = getattr(uid, "name", "unknown encoding")
        raise UserInputError(
            f"{path}: DICOM pixel data cannot be decoded ({syntax}: {type(err).__name__}); "
            "export the image as PNG or uncompressed DICOM") from None
    return to_rgb_image(to_display(ds, values))


def _check_pixels(path: Path, width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise UserInputError(_too_large(path, f"{width} x {height}"))


def _too_large(path: Path, size: str = "") -> str:
    side = math.isqrt(MAX_IMAGE_PIXELS)
    image = f"image of {size} pixels is" if size else "image is"
    return (f"{path}: {image} over the {MAX_IMAGE_PIXELS:,}-pixel limit (a decompression "
            f"bomb or a huge scan); downscale it to at most {side} x {side}")


def _wanted_split(split: str | None) -> str | None:
    if split is None:
        return None
    wanted = SPLIT_NAMES.get(str(split).lower())
    if wanted is None:
        raise UserInputError(f"unknown split {split!r}: use one of {', '.join(SPLITS)} or None")
    return wanted


def load_vqa_folder(path: str | Path, split: str | None = None,
                    limit: int | None = None) -> list[VQASample]:
    """Closed-ended questions of a VQA-RAD / SLAKE / PathVQA-style folder as VQASamples.

    The split of a record comes from its "split" key, VQA-RAD's "phrase_type" (test_* is
    test) or the JSON file name (train / validate / test); with none of these a sample is
    "test". `answer_set` is ["yes", "no"] for yes/no questions, else the closed answers of the
    same question_type in the file. Images are searched under the JSON file's folder, its
    subfolders and theirs; an image shared by several questions is loaded once. With `limit`
    only the first `limit` questions are kept, and only their images are decoded.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UserInputError(f"limit must be a positive integer or None, got {limit!r}")
    wanted = _wanted_split(split)
    root, files = _json_files(Path(path))
    chosen: list[tuple[_Record, list[str]]] = []
    for file in files:
        if wanted and _split_from_name(file.stem) not in (None, wanted):
            continue
        records = _closed_records(file, _read_json(file))
        answer_sets = _answer_sets(records)
        for rec in records:
            if wanted and rec.split is None:
                raise UserInputError(
                    f"{rec.where} has no split ('split' or 'phrase_type' key, or a train/val/"
                    "test file name); call load_vqa_folder without split"
                )
            if wanted and rec.split != wanted:
                continue
            options = list(YES_NO) if rec.answer in YES_NO else answer_sets[rec.question_type]
            chosen.append((rec, options))
    if not chosen:
        raise UserInputError(
            f"no closed-ended English questions in {path}"
            + (f" for split {wanted!r}" if wanted else "")
            + "; check the answer_type / q_lang fields and the split"
        )
    finder = _ImageFinder(root)
    chosen = chosen[:limit]
    return [
        VQASample(
            image=finder.load(rec),
            question=rec.question,
            answer=rec.answer,
            question_type=rec.question_type,
            answer_set=options,
            source_id=rec.image_name,
            split=rec.split or wanted or "test",
        )
        for rec, options in chosen
    ]

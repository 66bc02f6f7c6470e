"""Bad images in a user's VQA folder (issue 22): a DICOM without pixel data or with pixels no
decoder reads, an image of an unsupported mode, a corrupt PNG or JPEG. Each is one line that
names the file and the fix, exit 2 through the CLI with nothing written; a good DICOM loads."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from typer.testing import CliRunner

from mfmaccel.data.medvqa import load_vqa_folder
from mfmaccel.data.medvqa.dicomset import dicom_path
from mfmaccel.errors import UserInputError


def vqa_folder(root: Path, name: str, data: bytes) -> Path:
    """One yes/no question about one image file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)
    records = [{"image_name": name, "question": "Is this normal?", "answer": "yes"}]
    (root / "test.json").write_text(json.dumps(records))
    return root


def _saved(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def _scan() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _report_dicom() -> bytes:
    """A DICOM object with no image in it, like a structured report."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    ds.Modality, ds.PatientID = "SR", "anonymous"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _package_file(name: str) -> bytes:
    return dicom_path(name).read_bytes()


def _png_16bit() -> bytes:
    return _saved(Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 9),
                  "PNG")


def _float_tiff() -> bytes:
    return _saved(Image.fromarray(np.random.default_rng(1).random((32, 32), np.float32)),
                  "TIFF")


BAD = {
    "report.dcm": (_report_dicom, "DICOM file without pixel data", "export one as PNG"),
    "truncated.dcm": (lambda: _package_file("emri_small_jpeg_2k_lossless_too_short.dcm"),
                      "DICOM file without pixel data", "point the record at an image"),
    "lossless.dcm": (lambda: _package_file("JPEG-LL.dcm"), "pixel data cannot be decoded",
                     "export the image as PNG"),
    "face.dcm": (lambda: _package_file("OT-PAL-8-face.dcm"), "not a readable DICOM file",
                 "replace it"),
    "deep.png": (_png_16bit, "image mode I;16 .* not supported", "8-bit"),
    "float.tif": (_float_tiff, "image mode F .* not supported", "8-bit"),
    "lab.tif": (lambda: _saved(Image.new("LAB", (16, 16), (50, 10, 10)), "TIFF"),
                "image mode LAB .* not supported", "8-bit"),
    "cut.png": (lambda: _saved(_scan(), "PNG")[:300], "cannot read image", "replace it"),
    "bad_crc.png": (lambda: (lambda b: b[:60] + bytes([b[60] ^ 0xFF]) + b[61:])(
        _saved(_scan(), "PNG")), "cannot read image", "replace it"),
    "cut.jpg": (lambda: _saved(_scan(), "JPEG", quality=90)[:400], "cannot read image",
                "replace it"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_image_is_one_line_naming_file_and_fix(tmp_path: Path, name: str) -> None:
    make, problem, fix = BAD[name]
    root = vqa_folder(tmp_path / "vqa", name, make())
    with pytest.raises(UserInputError, match=f"{name}: .*{problem}.*{fix}") as caught:
        load_vqa_folder(root)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["report.dcm", "deep.png", "cut.jpg"])
def test_through_the_cli_it_is_exit_2_and_nothing_written(tmp_path: Path, name: str) -> None:
    from mfmaccel.cli import app

    make, problem, _ = BAD[name]
    root = vqa_folder(tmp_path / "vqa", name, make())
    out = tmp_path / "out.json"
    result = CliRunner().invoke(app, ["eval", "--model", "tiny-llava", "--task", "medvqa",
                                      "--data", str(root), "--out", str(out)])
    assert result.exit_code == 2 and name in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_a_dicom_image_loads_windowed_as_rgb(tmp_path: Path) -> None:
    root = tmp_path / "vqa"
    root.mkdir()
    shutil.copy(dicom_path("emri_small.dcm"), root / "head.dcm")  # named without its suffix
    shutil.copy(dicom_path("US1_UNCR.dcm"), root / "us.img")  # found by its DICM magic word
    records = [{"image_name": name, "question": "Is this normal?", "answer": "yes"}
               for name in ("head", "us.img")]
    (root / "test.json").write_text(json.dumps(records))
    head, ultrasound = load_vqa_folder(root)
    assert head.image.mode == ultrasound.image.mode == "RGB"
    assert head.image.size == (64, 64) and ultrasound.image.size == (640, 480)
    gray = np.asarray(head.image)
    assert gray.min() < 20 and gray.max() > 235  # the value range is used, not clipped
    assert np.array_equal(gray[..., 0], gray[..., 2])

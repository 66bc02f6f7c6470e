"""`export_model`: a model by name or path, written as GGUF or a plain Hugging Face folder.

What `mfmaccel export` calls. `--out` is checked before the model loads, so a bad path costs
nothing; the format's own writer then checks the family and writes atomically.
"""

from __future__ import annotations

from pathlib import Path

from mfmaccel.errors import UserInputError
from mfmaccel.fileio import check_parent_folder, check_replaceable
from mfmaccel.models.gguf_export import ExportReport, check_family, check_gguf_out, export_gguf
from mfmaccel.models.hf_export import export_hf
from mfmaccel.models.loader import load_model

FORMATS = ("gguf", "hf")


def export_model(spec: str, out: Path, fmt: str) -> ExportReport:
    """Load `spec` (name, folder, .gguf) and write it to `out` in format `fmt`."""
    out = Path(out).expanduser().absolute()
    check_out(out, fmt)
    model = load_model(spec)
    if fmt == "gguf":
        check_family(model)
        return export_gguf(model, out)
    return export_hf(model, out)


def check_out(out: Path, fmt: str) -> None:
    """Refuse an unknown format or an `out` the format's writer would refuse, before loading."""
    if fmt not in FORMATS:
        raise UserInputError(f"unknown export format '{fmt}'; choose one of: {', '.join(FORMATS)}")
    if fmt == "gguf":
        check_gguf_out(out)
        return
    check_parent_folder(out)
    check_replaceable(out)

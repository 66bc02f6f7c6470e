"""The workload of whatever model a user names: a public config (`roberta-base`, `vit-base`), a
folder holding a config alone or an architecture the loader does not load (`metatrace`, no
weights read), or anything `load_model` takes (`workload`, traced with its weights)."""

from __future__ import annotations

from mfmaccel.hw.metatrace import CONFIG_ONLY, config_folder, workload_for_config
from mfmaccel.hw.ops import Workload
from mfmaccel.hw.workload import workload_for_model
from mfmaccel.models import load_model


def workload_for_spec(spec: str, seq_len: int, image_size: int | None = None) -> Workload:
    """`roberta-base`, `vit-base` (public configs), a folder of a config alone or of an
    architecture the loader does not load (traced from its config, no weights read), or
    anything `load_model` takes (traced with its weights: pruned and quantized shapes)."""
    if spec in CONFIG_ONLY:
        return workload_for_config(CONFIG_ONLY[spec](), seq_len, spec, image_size)
    config = config_folder(spec)
    if config is not None:
        return workload_for_config(config, seq_len, spec, image_size)
    return workload_for_model(load_model(spec), seq_len, image_size)

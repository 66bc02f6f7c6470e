"""The accelerator's choices as enums (presets, attention) and a preset adjusted by the user."""

from __future__ import annotations

import json

import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.hw.arch import PRESETS, ArchPreset, Attention, customized_arch, get_arch


def test_the_preset_choices_are_the_presets() -> None:
    assert [str(p) for p in ArchPreset] == list(PRESETS)
    assert get_arch(ArchPreset.edge) is PRESETS["edge"]


def test_a_customized_preset_keeps_what_the_user_left_out() -> None:
    assert customized_arch("edge", rows=None, attention=None) is PRESETS["edge"]
    wide = customized_arch("edge", rows=32, attention=Attention.full)
    assert (wide.rows, wide.cols, wide.name) == (32, PRESETS["edge"].cols, "edge")
    assert json.dumps(wide.attention) == '"full"'  # an enum member records as its string
    with pytest.raises(UserInputError, match="attention must be 'tiled' or 'full'"):
        customized_arch("edge", attention="half")
    with pytest.raises(UserInputError, match="unknown architecture preset"):
        customized_arch("tpu")

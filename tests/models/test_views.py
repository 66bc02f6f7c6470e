"""`models.views.shallow_copy`: weights shared, but the copy's own children, parameters,
buffers and forward hooks, so changing the copy leaves the original as it was."""

from __future__ import annotations

import torch
from torch import nn

from mfmaccel.models.views import shallow_copy


def test_changing_a_shallow_copy_leaves_the_original_alone() -> None:
    original = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    original.register_buffer("scale", torch.ones(1))
    copied = shallow_copy(original)
    assert copied[0] is original[0]  # shared until replaced
    copied[1] = nn.Tanh()
    copied.scale = torch.zeros(1)
    calls = []
    copied.register_forward_pre_hook(lambda module, args: calls.append("pre"))
    copied.register_forward_hook(lambda module, args, out: calls.append("post"))
    original(torch.ones(1, 3))
    assert calls == [] and isinstance(original[1], nn.ReLU) and original.scale.item() == 1.0
    copied(torch.ones(1, 3))
    assert calls == ["pre", "post"]

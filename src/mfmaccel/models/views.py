"""Views of a model that swap a submodule without copying weights."""

from __future__ import annotations

import copy

from torch import nn


def shallow_copy(module: nn.Module) -> nn.Module:
    """A copy of `module` sharing every parameter and child, with its own table of children:
    replacing a child in the copy leaves the original untouched (a plain `copy.copy` would
    share that table and change both)."""
    shallow = copy.copy(module)
    shallow._modules = dict(module._modules)
    return shallow

"""Views of a model that swap a submodule without copying weights."""

from __future__ import annotations

import copy

from torch import nn

# What a module keeps in tables a plain `copy.copy` would share with the original.
OWN_TABLES = ("_modules", "_parameters", "_buffers", "_forward_pre_hooks",
              "_forward_pre_hooks_with_kwargs", "_forward_hooks", "_forward_hooks_with_kwargs",
              "_forward_hooks_always_called")


def shallow_copy(module: nn.Module) -> nn.Module:
    """A copy of `module` sharing every parameter, buffer and child, with its own tables of
    them and of forward hooks: replacing a child, a parameter or a buffer in the copy, or
    hooking it, leaves the original untouched (a plain `copy.copy` would share those tables and
    change both)."""
    shallow = copy.copy(module)
    for table in OWN_TABLES:
        setattr(shallow, table, type(getattr(module, table))(getattr(module, table)))
    return shallow

"""The C++ int8 kernel (`csrc/int8_linear.cpp`), compiled once per machine with torch's
extension builder into the mfmaccel cache, and a plain-PyTorch fallback when no compiler is
available (`int8_kernel()` returns None then, and callers dequantize instead)."""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from types import ModuleType

from mfmaccel.runtime.cachedir import cache_root

SOURCE = Path(__file__).parent / "csrc" / "int8_linear.cpp"


class _Switch:
    """`KERNELS.enabled = False` makes int8 layers compute through their dequantized weights
    (the reference the kernel is checked against)."""

    enabled = True


KERNELS = _Switch()


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


@functools.cache
def int8_kernel() -> ModuleType | None:
    """The compiled extension, or None (no compiler / build failed / MFMACCEL_NO_KERNELS=1)."""
    if os.environ.get("MFMACCEL_NO_KERNELS") == "1":
        return None
    from torch.utils import cpp_extension

    flags = ["-O3"]
    if {"avx2", "fma"} <= _cpu_flags():
        flags += ["-mavx2", "-mfma"]
    build = cache_root() / "kernels" / "int8_linear"
    build.mkdir(parents=True, exist_ok=True)
    try:
        return cpp_extension.load(
            name="mfmaccel_int8_linear", sources=[str(SOURCE)], build_directory=str(build),
            extra_cflags=[*flags, "-fopenmp"], extra_ldflags=["-fopenmp"], verbose=False,
        )
    except Exception as err:  # no compiler, no ninja: fall back, say why once
        warnings.warn(f"int8 kernel unavailable ({type(err).__name__}: {err}); "
                      "int8 layers compute through dequantized weights", stacklevel=2)
        return None

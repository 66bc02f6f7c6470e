"""The C++ kernels (`csrc/int8_linear.cpp`, `csrc/int4_linear.cpp`), compiled once per machine
with torch's extension builder into the mfmaccel cache, and a plain-PyTorch fallback when no
compiler is available (`int8_kernel()` / `int4_kernel()` return None then, and callers
dequantize instead)."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from mfmaccel.runtime.cachedir import cache_root

T = TypeVar("T")


class _Switch:
    """`KERNELS.enabled = False` makes int8 and 4-bit layers compute through their dequantized
    weights (the reference the kernels are checked against); `KERNELS.reference(compute)`
    does so for one call."""

    enabled = True

    def reference(self, compute: Callable[[], T]) -> T:
        """`compute()` through the dequantized weights, the kernels switched back on after."""
        self.enabled = False
        try:
            return compute()
        finally:
            self.enabled = True


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
    """The int8 extension, or None (no compiler / build failed / MFMACCEL_NO_KERNELS=1). AVX2
    only: an AVX-512 build tried in session 23 was faster on weights in cache but slower
    streaming them from memory, which is what decode does (timed by hand, not kept)."""
    return _build("int8_linear", simd=("avx2", "fma"))


@functools.cache
def int4_kernel() -> ModuleType | None:
    """The 4-bit extension, or None as for `int8_kernel`, and on a CPU without AVX-512: its
    table lookup (`_mm512_permutexvar_ps`) is the whole point, and a portable build would be
    slower than the dequantized fp32 product the layers fall back to."""
    return _build("int4_linear", simd=("avx512f", "avx2", "fma"), simd_required=True)


def _build(name: str, *, simd: tuple[str, ...],
           simd_required: bool = False) -> ModuleType | None:
    """`csrc/<name>.cpp` compiled into the mfmaccel cache, targeting the `simd` instruction
    sets where this CPU has them all (else portable C++, or None when `simd_required`), or None
    with a one-line warning saying why."""
    if os.environ.get("MFMACCEL_NO_KERNELS") == "1":
        return None
    has_simd = set(simd) <= _cpu_flags()
    if simd_required and not has_simd:
        return None
    from torch.utils import cpp_extension

    flags = ["-O3", *(f"-m{flag}" for flag in simd if has_simd)]
    build = cache_root() / "kernels" / name
    build.mkdir(parents=True, exist_ok=True)
    try:
        return cpp_extension.load(
            name=f"mfmaccel_{name}", sources=[str(Path(__file__).parent / "csrc" / f"{name}.cpp")],
            build_directory=str(build), extra_cflags=[*flags, "-fopenmp"],
            extra_ldflags=["-fopenmp"], verbose=False,
        )
    except Exception as err:  # no compiler, no ninja: fall back, say why once
        warnings.warn(f"{name} kernel unavailable ({type(err).__name__}: {err}); "
                      "its layers compute through dequantized weights", stacklevel=2)
        return None

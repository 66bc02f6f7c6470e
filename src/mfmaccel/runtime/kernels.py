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
    only: an AVX-512 build ran 1.9x faster from cache but 1.8x slower streaming weights from
    memory, which is what decode does (session 23, a 151936 x 1536 weight: 8.6 against 15.1
    GB/s on one core, 16 against 29 on two)."""
    return _build("int8_linear", simd=(("avx2", "fma"),))


@functools.cache
def int4_kernel() -> ModuleType | None:
    """The 4-bit extension, or None as for `int8_kernel`. Its fast path needs AVX-512 (the
    table lookup `_mm512_permutexvar_ps`); a build without it still computes exactly, but
    slower than the dequantized fp32 product, so callers ask `simd()` before using it."""
    return _build("int4_linear", simd=(("avx512f", "avx2", "fma"),))


def _build(name: str, *, simd: tuple[tuple[str, ...], ...]) -> ModuleType | None:
    """`csrc/<name>.cpp` compiled into the mfmaccel cache, targeting the first of the `simd`
    tiers (instruction sets) this CPU has in full (none: portable C++), or None with a
    one-line warning saying why."""
    if os.environ.get("MFMACCEL_NO_KERNELS") == "1":
        return None
    from torch.utils import cpp_extension

    flags = ["-O3"]
    tier = next((tier for tier in simd if set(tier) <= _cpu_flags()), ())
    flags += [f"-m{flag}" for flag in tier]
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

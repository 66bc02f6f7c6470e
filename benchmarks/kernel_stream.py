"""The decode kernels streaming a weight from memory: one-row products of the int8 kernel
(`csrc/int8_linear.cpp`) and the 4-bit kernel (`csrc/int4_linear.cpp`) against fp32 `x @ W^T`,
on one and on two threads, in one run.

The weight has qwen2.5-coder-1.5b's head shape (151936 x 1536; `--rows`, `--cols`), far larger
than the caches, as every decode step reads its weights; its integers are random (the time
does not depend on their values). Each timing is the median of `--repeats` products after a
warm-up, the variants in turn and the order reversed on every other repeat. Reports weights/s
and packed bytes/s. A CPU result: it says whether unpacking or memory bounds each kernel here.

Usage: python benchmarks/kernel_stream.py [--rows 151936] [--cols 1536] [--repeats 15]
       [--record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import recordfile
import torch

from mfmaccel.runtime.kernels import int4_kernel, int8_kernel


def variants(rows: int, cols: int) -> dict:
    """name -> (product of one row, packed bytes of the weight)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, cols, generator=generator)
    int8 = torch.randint(-127, 128, (rows, cols), dtype=torch.int8, generator=generator)
    row_scale = torch.rand(rows, generator=generator)
    nibbles = torch.randint(0, 256, (rows, cols // 2), dtype=torch.uint8, generator=generator)
    fp32 = torch.randn(rows, cols, generator=generator)
    runs = {"fp32": (lambda: x @ fp32.T, fp32.numel() * 4),
            "int8": (lambda: int8_kernel().int8_linear(x, int8, row_scale, None), int8.numel())}
    if int4_kernel() is not None:
        for group in (32, 128):
            scale = torch.rand(rows, cols // group, generator=generator)
            shift = torch.full_like(scale, 8.0)
            runs[f"int4-g{group}"] = (
                lambda s=scale, h=shift, g=group: int4_kernel().int4_linear(x, nibbles, s, h, g,
                                                                          None),
                nibbles.numel() + 8 * scale.numel())
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=151936)
    parser.add_argument("--cols", type=int, default=1536)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    if int8_kernel() is None:
        raise SystemExit("the int8 kernel did not build here (see the warning); nothing to time")
    runs = variants(args.rows, args.cols)
    result = {"rows": args.rows, "cols": args.cols, "repeats": args.repeats,
              "int4_kernel": int4_kernel() is not None, "threads": {}}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        times = {name: [] for name in runs}
        for run, _ in runs.values():
            run()  # warm-up
        order = list(runs)
        for repeat in range(args.repeats):
            for name in order if repeat % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                runs[name][0]()
                times[name].append(time.perf_counter() - start)
        result["threads"][threads] = {
            name: {"seconds": statistics.median(times[name]),
                   "g_weights_per_s": args.rows * args.cols / statistics.median(times[name]) / 1e9,
                   "gb_per_s": runs[name][1] / statistics.median(times[name]) / 1e9}
            for name in runs}
    result["commit"] = recordfile.commit()
    path = recordfile.record_path(["kernel-stream"], result["commit"]) if args.record else None
    recordfile.emit(result, path)


if __name__ == "__main__":
    main()

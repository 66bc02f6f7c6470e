"""Batch-1 decode on this machine: our loop vs Hugging Face `generate` vs the bandwidth roofline.

Everything is measured in this one run: the memory bandwidth (streaming reads of a buffer far
larger than the caches), the roofline it implies for batch-1 decode (every new token reads all
weights once: bandwidth / weight bytes), the rate at which this machine's BLAS runs the model's
own linear layers on one row (the floor under any engine that calls them: it says how much of
the gap to the roofline is the matrix-vector kernel), and both engines on the same model and
prompt.
Prints JSON. Usage: python benchmarks/decode.py [--model smollm2-135m] [--new-tokens 64]
[--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import torch

from mfmaccel.evaluate.speed import measure_speed
from mfmaccel.models import load_model


def read_bandwidth(gigabytes: float = 1.0, repeats: int = 7) -> float:
    """Bytes/s of streaming reads (a sum over a buffer), median of repeats."""
    buffer = torch.ones(int(gigabytes * (1 << 30)) // 4, dtype=torch.float32)
    buffer.sum()  # fault the pages in
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        buffer.sum()
        times.append(time.perf_counter() - start)
    return buffer.numel() * 4 / statistics.median(times)


def copy_bandwidth(gigabytes: float = 1.0, repeats: int = 7) -> float:
    """Bytes/s moved by a copy (read + write counted), median of repeats."""
    source = torch.ones(int(gigabytes * (1 << 30)) // 4, dtype=torch.float32)
    target = torch.empty_like(source)
    target.copy_(source)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        target.copy_(source)
        times.append(time.perf_counter() - start)
    return 2 * source.numel() * 4 / statistics.median(times)


@torch.inference_mode()
def linear_layers_seconds(module: torch.nn.Module, repeats: int = 7) -> tuple[float, int]:
    """(median seconds, weight bytes) of one pass over every linear layer of `module` on one row:
    the matrix-vector work of one decode step, with nothing else around it."""
    layers = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(1, layer.in_features) for layer in layers]
    times = []
    for _ in range(repeats + 1):  # the first pass warms up
        start = time.perf_counter()
        for layer, x in zip(layers, inputs, strict=True):
            layer(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), sum(layer.weight.nbytes for layer in layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_model(args.model)
    bandwidth = read_bandwidth()
    roofline = bandwidth / model.weight_bytes
    linear_seconds, linear_bytes = linear_layers_seconds(model.module)
    ours = measure_speed(model, new_tokens=args.new_tokens, repeats=args.repeats)
    hf = measure_speed(model, new_tokens=args.new_tokens, repeats=args.repeats,
                       engine="hf-generate")
    print(json.dumps({
        "model": model.name,
        "dtype": "float32",
        "threads": torch.get_num_threads(),
        "read_bandwidth_gb_s": bandwidth / 1e9,
        "copy_bandwidth_gb_s": copy_bandwidth() / 1e9,
        "weight_bytes": model.weight_bytes,
        "roofline_tokens_per_s": roofline,
        "linear_layers_bandwidth_gb_s": linear_bytes / linear_seconds / 1e9,
        "linear_layers_tokens_per_s": 1 / linear_seconds,
        "ours": ours.to_dict(),
        "hf_generate": hf.to_dict(),
        "ours_over_hf": ours.decode_tokens_per_s / hf.decode_tokens_per_s,
        "ours_over_roofline": ours.decode_tokens_per_s / roofline,
        "hf_over_roofline": hf.decode_tokens_per_s / roofline,
        "ours_over_linear_layers": ours.decode_tokens_per_s * linear_seconds,
        "prefill_ours_over_hf": hf.prefill_seconds / ours.prefill_seconds,
    }, indent=2))


if __name__ == "__main__":
    main()

"""Activation ranges from real data: one float pass with hooks records the largest |value| of
every tensor the integer program will hold, so each gets a fixed (static) scale."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


class RangeRecorder:
    """Largest |x| per name over every call; `observe` is what hooks call."""

    def __init__(self) -> None:
        self.absmax: dict[str, float] = {}

    def observe(self, name: str, value: torch.Tensor) -> None:
        peak = float(value.detach().abs().max()) if value.numel() else 0.0
        self.absmax[name] = max(self.absmax.get(name, 0.0), peak)

    def scale(self, name: str, levels: int = 127) -> float:
        """Symmetric scale mapping the recorded range onto +-levels."""
        return max(self.absmax[name], 1e-8) / levels


def _first(output):
    return output[0] if isinstance(output, tuple) else output


@torch.inference_mode()
def record_ranges(module: nn.Module, taps: dict[str, tuple[nn.Module, str]],
                  run: Callable[[], Iterable[object]]) -> RangeRecorder:
    """Run `run()` (which calls `module` on calibration batches) with a hook on every tap:
    name -> (submodule, "input" or "output")."""
    recorder = RangeRecorder()
    handles = []
    for name, (sub, where) in taps.items():
        if where == "input":
            handles.append(sub.register_forward_pre_hook(
                lambda _m, args, n=name: recorder.observe(n, args[0])))
        else:
            handles.append(sub.register_forward_hook(
                lambda _m, _a, out, n=name: recorder.observe(n, _first(out))))
    try:
        for _ in run():
            pass
    finally:
        for handle in handles:
            handle.remove()
    return recorder

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
        self.channels: dict[str, torch.Tensor] = {}  # largest |x| per last-dim channel

    def observe(self, name: str, value: torch.Tensor) -> None:
        value = value.detach().abs().double()
        if not value.numel():
            return
        per_channel = value.reshape(-1, value.shape[-1]).amax(0)
        seen = self.channels.get(name)
        self.channels[name] = per_channel if seen is None else torch.maximum(seen, per_channel)
        self.absmax[name] = float(self.channels[name].max())

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

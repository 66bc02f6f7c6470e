"""The neuron every spiking program is built from: a signed, multi-threshold integrate-and-fire
neuron that tracks its own spike count (SpikeZIP-TF's ST-BIF, in integers).

It stands where the integer program requantizes: y = clamp(round_half_up(m x / 2^shift)). Its
membrane starts at half a threshold (theta = 2^shift), integrates m times each change of x,
and fires up to `levels` unit spikes a step: positive ones while the membrane holds a
threshold and the count is below the range's top, negative ones while the membrane is below
zero and the count above its bottom. Once it stops firing with the input complete, either the
membrane lies in [0, theta), so count = floor((m x + theta/2) / theta), or the count sits at a
bound the rounded value passes: the count is the requantized y, exactly. A shift of 0 with
m = 1 is a follower: its count tracks an integer input at most `levels` a step.
"""

from __future__ import annotations

import torch

from mfmaccel.hw.intops.datapath import Dyadic, DyadicVector, IntRange


class Neuron:
    """A population of neurons, one per element of the tensor it replaces."""

    def __init__(self, factor: Dyadic | DyadicVector | None, out: IntRange,
                 levels: int | None = 1) -> None:
        self.m = 1 if factor is None else factor.m
        self.shift = 0 if factor is None else factor.shift
        self.theta = 1 << self.shift
        self.out = out
        self.levels = levels  # unit spikes a step at most; None: any number (graded)
        self.membrane: torch.Tensor | None = None
        self.count: torch.Tensor | None = None
        self.fed: torch.Tensor | None = None  # the input integrated so far

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Integrate the input's change since the last step (`x` is the input so far), fire;
        returns this step's spikes (signed integers, |s| <= levels)."""
        x = x.long()
        if self.membrane is None:
            self.membrane = torch.full_like(x, self.theta >> 1)
            self.count = torch.zeros_like(x)
            self.fed = torch.zeros_like(x)
        self.membrane += (x - self.fed) * self.m
        self.fed = x.clone()  # callers may grow `x` in place
        spikes = torch.div(self.membrane, self.theta, rounding_mode="floor")
        if self.levels is not None:
            spikes = spikes.clamp(-self.levels, self.levels)
        spikes = torch.maximum(torch.minimum(spikes, self.out.high - self.count),
                               self.out.low - self.count)
        self.membrane -= spikes * self.theta
        self.count += spikes
        return spikes

"""spikingjelly 2.0.0 as an external baseline for the spiking layer (issue 25): its Qwen2 ann2snn
recipe run on a Qwen2 model of ours, scored by perplexity on our text corpus at a few time steps
T beside the float model's perplexity on the same tokens.

Why this recipe: of spikingjelly's ann2snn recipes it is the one that turns a pretrained
transformer into a network with spiking neurons without training. `SpikeZIPTFQANNRecipe` needs a
quantized network trained with its quantizers, and `TransformerTDEquivalentRecipe` has no
spiking neurons at all (floating temporal differences only).

What it builds (read from spikingjelly/activation_based/ann2snn/recipes/qwen2.py): an offline,
layer by layer, T-step network. Signed QCFS encoders, two integrate-and-fire neurons each (one
for the positive part, one for the negative) that fire at most one spike a step, carry the
embeddings, q, k, v (after rotary) and the MLP's gated product as T-step spike trains whose sums
are round(x / s) clamped to [-T, T] times s, with s a per-channel step: the channel's largest
calibration magnitude over `calibration_levels`. Everything else (RMSNorm, the projections that
read a norm's output, SiLU, the gate product, softmax, the residual stream, the head) runs on
floating temporal differences. We set `calibration_levels = T`, so T steps of binary spikes carry
T levels a sign and the clamp sits at the calibration maximum.

spikingjelly is an optional extra, never part of the core install: its metadata requires
torchvision and torchaudio, whose only builds on this machine class are CUDA builds, so it is
installed with --no-deps beside the few packages it imports (`INSTALL`); the recipe imports
neither.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from mfmaccel.data.text import load_text_corpus
from mfmaccel.errors import UserInputError
from mfmaccel.models.record import LoadedModel
from mfmaccel.records import Record

if TYPE_CHECKING:  # only for annotations: spikingjelly is optional
    from spikingjelly.activation_based.ann2snn import Qwen2SNNCalibration

VERSION = "2.0.0"
INSTALL = ("pip install --no-deps spikingjelly==2.0.0 loguru==0.8.0 tqdm==4.70.1 scipy==1.17.1 "
           "matplotlib==3.11.2 requests==2.34.2")
RECIPE = "spikingjelly.activation_based.ann2snn.Qwen2SNNRecipe (calibrate_qwen2_snn, signed_if)"
CORPUS = "pydoc_data.topics (data.text)"
ENCODER_KINDS = ("input", "query", "key", "value", "mlp")


def require_spikingjelly() -> None:
    """Refuse in one line, naming the fix, when spikingjelly 2.0.0 cannot be imported: the
    baseline is an optional extra (see the module docstring) and is written against that
    version's ann2snn API."""
    try:
        importlib.import_module("spikingjelly.activation_based.ann2snn")
    except ImportError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserInputError(f"the spikingjelly baseline needs spikingjelly {VERSION}, which "
                             f"cannot be imported ({reason}); install it with `{INSTALL}`"
                             ) from None
    try:
        found = importlib.metadata.version("spikingjelly")
    except importlib.metadata.PackageNotFoundError:
        found = None  # importable but not pip-installed (a source tree): trust it
    if found is not None and found != VERSION:
        raise UserInputError(f"the spikingjelly baseline is written against spikingjelly "
                             f"{VERSION}, but {found} is installed; install it with `{INSTALL}`")


@dataclass
class StepsResult(Record):
    """The converted network at one T, on the evaluation windows."""

    time_steps: int
    calibration_levels: int
    perplexity: float
    mean_nll: float
    spikes: int  # every encoder's spikes, positive and negative, over every window
    encoded_values: int  # activations the encoders carried (each over T steps)
    spikes_per_value: float  # spikes / encoded_values: of at most T
    spikes_per_value_by_kind: dict[str, float]  # input, query, key, value, mlp
    encoding_relative_l2: float  # mean over encoders and windows: spike sums against the float
    seconds: float  # conversion and the forward passes


@dataclass
class SpikingjellyBaseline(Record):
    model: str
    library: str
    recipe: str
    corpus: str  # the test half scored, the train half calibrated on
    windows: int  # test-half windows, each of window_tokens tokens, its first token unscored
    window_tokens: int
    scored_tokens: int
    calibration_windows: int  # train-half windows of window_tokens tokens
    calibration_tokens: int
    float_perplexity: float
    float_mean_nll: float
    at_steps: list[StepsResult]
    structure: dict = field(default_factory=dict)  # the converted network's operator counts
    seconds: float = 0.0


def corpus_ids(model: LoadedModel, split: str) -> torch.Tensor:
    """One half of the perplexity corpus (`data.text`) as the model's token ids."""
    return model.tokenizer(load_text_corpus(split), return_tensors="pt",
                           add_special_tokens=False).input_ids[0]


def token_windows(ids: torch.Tensor, *, count: int, length: int) -> list[torch.Tensor]:
    """The first `count` non-overlapping windows of `length` tokens; refused when the text is
    shorter, so a record never holds fewer tokens than it says."""
    if count < 1 or length < 2:
        raise UserInputError(f"need at least 1 window of at least 2 tokens, got {count} x {length}")
    if len(ids) < count * length:
        raise UserInputError(f"the text has {len(ids)} tokens, fewer than {count} windows of "
                             f"{length}; ask for fewer or shorter windows")
    return [ids[i * length:(i + 1) * length] for i in range(count)]


def window_nll(logits: torch.Tensor, window: torch.Tensor) -> float:
    """Summed negative log-likelihood of every token of a window but its first (no context)."""
    return float(torch.nn.functional.cross_entropy(logits[:-1].float(), window[1:],
                                                   reduction="sum"))


@torch.inference_mode()
def float_nll(module: torch.nn.Module, windows: Sequence[torch.Tensor]) -> float:
    return sum(window_nll(module(input_ids=w.unsqueeze(0)).logits[0], w) for w in windows)


def calibration_bounds(module: torch.nn.Module,
                       windows: Sequence[torch.Tensor]) -> Qwen2SNNCalibration:
    """spikingjelly's calibration at one level: each channel's step is then its bound (largest
    magnitude), and `at_steps` divides it by any T, exactly as `calibrate_qwen2_snn` does for
    `calibration_levels = T` (`bound / levels`), so one float pass serves every T."""
    from spikingjelly.activation_based.ann2snn import Qwen2SNNConfig, calibrate_qwen2_snn

    batches = ({"input_ids": w.unsqueeze(0), "attention_mask": torch.ones(1, len(w),
                                                                          dtype=torch.long)}
               for w in windows)
    return calibrate_qwen2_snn(module, batches, Qwen2SNNConfig(time_steps=1,
                                                               calibration_levels=1))


def at_steps(bounds: Qwen2SNNCalibration, steps: int) -> Qwen2SNNCalibration:
    """The calibration `calibrate_qwen2_snn` gives for T = levels = `steps`, from the bounds."""
    return dataclasses.replace(
        bounds, input_scale=bounds.input_scale / steps,
        layer_scales=tuple({name: scale / steps for name, scale in layer.items()}
                           for layer in bounds.layer_scales),
        time_steps=steps, calibration_levels=steps)


def convert(module: torch.nn.Module, bounds: Qwen2SNNCalibration, steps: int) -> torch.nn.Module:
    """The recipe through spikingjelly's ModuleConverter; the float model is left as it was."""
    from spikingjelly.activation_based.ann2snn import (
        ModuleConverter,
        Qwen2SNNConfig,
        Qwen2SNNRecipe,
    )

    config = Qwen2SNNConfig(time_steps=steps, calibration_levels=steps)
    return ModuleConverter(Qwen2SNNRecipe(at_steps(bounds, steps), config)).convert(module)


def encoder_kind(name: str) -> str:
    """'model.input' -> 'input', 'layer.3.query' -> 'query'."""
    return name.rsplit(".", 1)[-1]


class SpikeTally:
    """Adds up the encoders' statistics, which describe only their latest encoding, after each
    window."""

    def __init__(self) -> None:
        self.spikes = {kind: 0 for kind in ENCODER_KINDS}
        self.values = {kind: 0 for kind in ENCODER_KINDS}
        self.errors: list[float] = []

    def add(self, statistics: Sequence[dict], steps: int) -> None:
        for stat in statistics:
            kind = encoder_kind(stat["name"])
            self.spikes[kind] += stat["positive_spike_count"] + stat["negative_spike_count"]
            self.values[kind] += stat["spike_value_count"] // steps
            self.errors.append(stat["local_relative_l2"])


@torch.inference_mode()
def spiking_nll(snn: torch.nn.Module, windows: Sequence[torch.Tensor],
                steps: int) -> tuple[float, SpikeTally]:
    """Each window from a reset network (spikingjelly's `reset_net`: neurons and temporal-
    difference memories start empty), its spikes tallied."""
    from spikingjelly.activation_based.functional import reset_net

    tally, total = SpikeTally(), 0.0
    for window in windows:
        reset_net(snn)
        total += window_nll(snn(input_ids=window.unsqueeze(0)).logits[0], window)
        tally.add(snn.encoder_statistics(), steps)
    return total, tally


def steps_result(module: torch.nn.Module, bounds: Qwen2SNNCalibration,
                 windows: Sequence[torch.Tensor], steps: int) -> tuple[StepsResult, dict]:
    """The network converted at T = `steps`, scored, and freed."""
    start = time.perf_counter()
    snn = convert(module, bounds, steps)
    structure = snn.structure_summary()
    total, tally = spiking_nll(snn, windows, steps)
    del snn  # a second copy of the weights: free it before the next T builds its own
    mean = total / sum(len(w) - 1 for w in windows)
    spikes, values = sum(tally.spikes.values()), sum(tally.values.values())
    return StepsResult(
        time_steps=steps, calibration_levels=steps, perplexity=math.exp(mean), mean_nll=mean,
        spikes=spikes, encoded_values=values, spikes_per_value=spikes / values,
        spikes_per_value_by_kind={k: tally.spikes[k] / tally.values[k] for k in ENCODER_KINDS},
        encoding_relative_l2=sum(tally.errors) / len(tally.errors),
        seconds=time.perf_counter() - start), structure


def qwen2_baseline(model: LoadedModel, *, steps: Sequence[int], windows: int,
                   window_tokens: int, calibration_windows: int,
                   progress: Callable[[str], None] | None = None) -> SpikingjellyBaseline:
    """spikingjelly's Qwen2 recipe on `model`, calibrated on the first windows of the corpus's
    train half, scored on the first windows of its test half at each T in `steps`, beside the
    float model on the same windows."""
    require_spikingjelly()
    module = model.module
    if getattr(module.config, "model_type", None) != "qwen2":
        raise UserInputError(f"spikingjelly's Qwen2 recipe takes a Qwen2 model; '{model.name}' "
                             "is not one (try qwen2.5-coder-0.5b or tiny-qwen2)")
    if not steps or min(steps) < 1:
        raise UserInputError("give at least one time step count, each at least 1")
    start = time.perf_counter()
    say = progress or (lambda _line: None)
    module.eval()
    test = token_windows(corpus_ids(model, "test"), count=windows, length=window_tokens)
    calibration = token_windows(corpus_ids(model, "train"), count=calibration_windows,
                                length=window_tokens)
    scored = sum(len(w) - 1 for w in test)
    float_mean = float_nll(module, test) / scored
    say(f"float perplexity {math.exp(float_mean):.3f} on {scored} tokens")
    bounds = calibration_bounds(module, calibration)
    results, structure = [], {}
    for t in steps:
        result, structure = steps_result(module, bounds, test, t)
        say(f"T={t}: perplexity {result.perplexity:.3f}, {result.spikes_per_value:.2f} spikes "
            f"per value, {result.seconds:.0f} s")
        results.append(result)
    return SpikingjellyBaseline(
        model=model.name, library=f"spikingjelly {VERSION}", recipe=RECIPE, corpus=CORPUS,
        windows=windows, window_tokens=window_tokens, scored_tokens=scored,
        calibration_windows=calibration_windows,
        calibration_tokens=calibration_windows * window_tokens,
        float_perplexity=math.exp(float_mean), float_mean_nll=float_mean, at_steps=results,
        structure=structure, seconds=time.perf_counter() - start)

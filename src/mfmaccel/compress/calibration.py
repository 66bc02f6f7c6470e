"""Calibration for sensitivity, GPTQ and static activation scales: windows of the training half
of the text corpus (the evaluation uses the disjoint test half) or of a user's own text file,
and the ranges activations take on it (`record_ranges`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from mfmaccel.data.text import load_text_corpus, load_text_file
from mfmaccel.errors import UserInputError
from mfmaccel.runtime.activation import ACT_QMAX, check_act_mode
from mfmaccel.runtime.linear import matmul_layers

VQA_CALIBRATION_SAMPLES = 96  # medvqa2 train questions (about 8,000 tokens at 112 px)


def calibration_batches(tokenizer, tokens: int = 2048, window: int = 512,
                        path: str | None = None, *, positions: int | None = None
                        ) -> list[torch.Tensor]:
    """`tokens` tokens of calibration text as (1, window) id tensors, from the start; a model
    with fewer `positions` than `window` (a 256-position GPT-2, say) gets windows of its own
    length, since learned position embeddings end there."""
    window = clipped_window(window, positions)
    text = load_text_file(path) if path else load_text_corpus("train")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    if len(ids) < min(tokens, window):
        raise UserInputError(f"calibration text has {len(ids)} tokens; give at least {window}")
    ids = ids[:tokens]
    return [ids[i:i + window].unsqueeze(0) for i in range(0, len(ids) - 1, window)
            if len(ids[i:i + window]) > 1]


def clipped_window(window: int, positions: int | None) -> int:
    """`window`, or the model's `positions` where it has fewer (None: no limit)."""
    if positions is None or positions >= window:
        return window
    if positions < 2:
        raise UserInputError(f"the model has {positions} position(s); calibration needs "
                             "windows of at least 2 tokens")
    return positions


@torch.inference_mode()
def vqa_calibration_batches(model, samples: Iterable, tokens: int = 2048) -> list[torch.Tensor]:
    """What a VLM's language model really reads, for GPTQ: the embedded image tokens, question
    and answer of VQA `samples` (train split), as (1, T, hidden) `inputs_embeds`, until about
    `tokens` positions. Projected image features look like no text, so Hessians from text
    alone miss the inputs that decide a VQA answer."""
    from mfmaccel.evaluate.vqa import vqa_prompt
    from mfmaccel.runtime.anatomy import decoder_body

    captured: list[torch.Tensor] = []
    handle = decoder_body(model.module).register_forward_pre_hook(
        lambda _, args, kw: captured.append(kw["inputs_embeds"].detach()), with_kwargs=True)
    try:
        for sample in samples:
            if sum(c.shape[1] for c in captured) >= tokens:
                break
            text = f"{vqa_prompt(model.processor, sample.question)} {sample.answer}"
            model.module(**model.processor(images=sample.image, text=text, return_tensors="pt"),
                         use_cache=False)
    finally:
        handle.remove()
    if not captured:
        raise UserInputError("no VQA samples to calibrate on")
    return captured


def vqa_calibration_samples(model) -> list:
    """Train questions of the benchmark `model` was adapted on (medvqa2 for medvlm, whose
    manifest says so; medvqa for medvlm-v1 and a user's LLaVA)."""
    from mfmaccel.data.medvqa import load_benchmark, load_medvqa

    if model.meta.get("benchmark") == "medvqa2":
        return load_benchmark("medvqa2", "train", limit=VQA_CALIBRATION_SAMPLES)
    return load_medvqa("train", per_source=8)  # medvlm-v1's recorded calibration


def gptq_calibration_batches(model, tokens: int = 2048) -> list[torch.Tensor]:
    """GPTQ's calibration for `model`: VQA prompts for a VLM (its language model then sees
    image tokens as it will in use), text from the corpus's train half otherwise."""
    from mfmaccel.models.record import VLM

    if model.kind == VLM:
        return vqa_calibration_batches(model, vqa_calibration_samples(model), tokens)
    return calibration_batches(model.tokenizer, tokens, positions=model.context_length)


class RangeRecorder:
    """Largest |x| per name (and per last-dimension channel) over every call; with a
    `percentile` below 100 also that percentile of |x| per call, which clips rare outliers."""

    def __init__(self, percentile: float = 100.0) -> None:
        if not 0 < percentile <= 100:
            raise UserInputError(f"percentile must lie in (0, 100], got {percentile}")
        self.percentile = percentile
        self.channels: dict[str, torch.Tensor] = {}
        self.quantiles: dict[str, list[float]] = {}

    def observe(self, name: str, value: torch.Tensor) -> None:
        value = value.detach().abs().double()
        if not value.numel():
            return
        per_channel = value.reshape(-1, value.shape[-1]).amax(0)
        seen = self.channels.get(name)
        self.channels[name] = per_channel if seen is None else torch.maximum(seen, per_channel)
        if self.percentile < 100:
            sample = value.flatten()[: 1 << 24]  # torch.quantile's input limit
            self.quantiles.setdefault(name, []).append(
                float(torch.quantile(sample, self.percentile / 100)))

    def peak(self, name: str) -> float:
        if self.percentile < 100:
            return max(self.quantiles[name])
        return float(self.channels[name].max())

    def scale(self, name: str, levels: int = 127) -> float:
        """Symmetric scale mapping the recorded range onto +-levels."""
        return max(self.peak(name), 1e-8) / levels


def first_output(output):
    """A module's main output: the first element when it returns a tuple."""
    return output[0] if isinstance(output, tuple) else output


@torch.inference_mode()
def record_ranges(module: nn.Module, taps: dict[str, tuple[nn.Module, str]],
                  run: Callable[[], Iterable[object]], percentile: float = 100.0
                  ) -> RangeRecorder:
    """Run `run()` (which calls `module` on calibration data) with a hook on every tap:
    name -> (submodule, "input" or "output"). One float pass gives every static scale."""
    recorder = RangeRecorder(percentile)
    handles = []
    for name, (sub, where) in taps.items():
        if where == "input":
            handles.append(sub.register_forward_pre_hook(
                lambda _m, args, n=name: recorder.observe(n, args[0])))
        else:
            handles.append(sub.register_forward_hook(
                lambda _m, _a, out, n=name: recorder.observe(n, first_output(out))))
    try:
        for _ in run():
            pass
    finally:
        for handle in handles:
            handle.remove()
    return recorder


def _observed_scales(module: nn.Module, layers: dict[str, nn.Module],
                     batches: Sequence[torch.Tensor], percentile: float) -> dict[str, float]:
    """Per layer: the `percentile` of |input| over `batches` (100: the largest), / 127."""
    taps = {name: (layer, "input") for name, layer in layers.items()}
    ranges = record_ranges(module, taps, lambda: (module(input_ids=b) for b in batches),
                           percentile)
    return {name: ranges.scale(name, ACT_QMAX) for name in layers}


@torch.inference_mode()
def calibrate_activations(module: nn.Module, mode: str, batches: Sequence[torch.Tensor] = (),
                          percentile: float = 100.0) -> int:
    """Switch every int8 layer of `module` to int8 activations; returns how many layers.

    In `tensor` mode each layer's scale comes from its inputs on `batches` (real text).
    """
    check_act_mode(mode)
    layers = matmul_layers(module)
    if not layers:
        raise UserInputError("no quantized layers to give int8 activations; quantize the "
                             "weights to int8-c-sym first (e.g. --uniform int8-c-sym)")
    if mode == "tensor" and not batches:
        raise UserInputError("per-tensor activation scales need calibration text")
    scales = _observed_scales(module, layers, batches, percentile) if mode == "tensor" else {}
    for name, layer in layers.items():
        layer.set_activations(mode, scales.get(name))
    return len(layers)

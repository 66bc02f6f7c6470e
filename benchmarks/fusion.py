"""CPU operator fusion (`mfmaccel.execute.fusion`) against our unfused path, torch.compile and
ONNX Runtime, on the same prompts in the same run. Per model: batch-1 prefill seconds at each
`--prefill-tokens` (one forward, logits of the last token) and greedy decode tokens/s
(`runtime.engine.greedy_generate`, `--new-tokens` after the speed prompt), medians of
`--repeats` rounds whose variant order rotates every round. Variants: `unfused` (the model as
`load_model` gives it), `fused` (`fuse(model)`), `fused_unpacked` (`fuse(model,
prepack=False)`: stacked products and lean blocks without oneDNN's packed weights, to separate
the two), `compile` (torch.compile of the unfused model, mode default; its warm-up time is
reported), `fused_compile` (torch.compile of the fused model) and `onnx` (prefill only: the
TorchScript ONNX export of the forward, run by ONNX Runtime with all graph optimisations;
decode would need the KV cache as graph inputs and outputs, an optimum-style export). A variant
that fails records why.

Also: whether the fused greedy tokens equal the unfused ones, the largest logit difference
relative to the largest logit, the share of an unfused decode step spent in the linear layers
(the same products run alone, one row each, in model order), the bandwidth roofline, and
residual add + RMSNorm timed as transformers computes it, through `F.rms_norm`, and in place.

Usage: python benchmarks/fusion.py [--models smollm2-135m qwen2.5-coder-0.5b]
       [--prefill-tokens 128 512] [--new-tokens 64] [--repeats 3]
       [--skip compile fused_compile onnx] [--record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from recordfile import commit, emit, record_path

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import torch  # noqa: E402
from decode import read_bandwidth  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRMSNorm  # noqa: E402

from mfmaccel.evaluate.speed import DEFAULT_PROMPT  # noqa: E402
from mfmaccel.execute.fusion import fuse  # noqa: E402
from mfmaccel.models import load_model  # noqa: E402
from mfmaccel.runtime.anatomy import decoder_layers, linear_layers  # noqa: E402
from mfmaccel.runtime.engine import greedy_generate  # noqa: E402

ONNX_TRACE_TOKENS = 64  # over FEW_ROWS and over 1: the prefill branches get traced


def random_ids(model, tokens: int) -> torch.Tensor:
    vocab = model.module.config.get_text_config().vocab_size
    return torch.randint(0, vocab, (1, tokens), generator=torch.Generator().manual_seed(tokens))


@torch.inference_mode()
def prefill_seconds(forward, ids: torch.Tensor) -> float:
    start = time.perf_counter()
    forward(ids)
    return time.perf_counter() - start


def decode_rate(module, prompt: torch.Tensor, new_tokens: int) -> tuple[float, list[int]]:
    out = greedy_generate(module, prompt, new_tokens)
    return out.decode_tokens_per_s, out.tokens


def module_forward(module):
    return lambda ids: module(input_ids=ids, logits_to_keep=1)


@torch.inference_mode()
def agreement(model, fused, prompt: torch.Tensor, ids: torch.Tensor, new_tokens: int) -> dict:
    reference = model.module(input_ids=ids).logits
    difference = (reference - fused.module(input_ids=ids).logits).abs().max()
    return {
        "greedy_tokens_identical": greedy_generate(fused.module, prompt, new_tokens).tokens
        == greedy_generate(model.module, prompt, new_tokens).tokens,
        "max_logit_difference_relative": float(difference / reference.abs().max()),
    }


@torch.inference_mode()
def linear_share(model, prompt: torch.Tensor, repeats: int) -> dict:
    """Seconds of one unfused decode step against the same step's products run alone."""
    products = [layer for block in decoder_layers(model.module)
                for layer in linear_layers(block).values()]
    products.append(model.module.get_output_embeddings())
    row = torch.randn(1, 1, products[0].in_features)
    step, alone = [], []
    for _ in range(repeats):
        rate, _ = decode_rate(model.module, prompt, 17)
        step.append(1 / rate)
        start = time.perf_counter()
        for layer in products:
            layer(row if layer.in_features == row.shape[-1] else
                  torch.randn(1, 1, layer.in_features))
        alone.append(time.perf_counter() - start)
    step_s, alone_s = statistics.median(step), statistics.median(alone)
    return {"decode_step_seconds": step_s, "linears_alone_seconds": alone_s,
            "linear_share": alone_s / step_s}


def weight_bytes(model) -> int:
    return sum(layer.weight.numel() * 4 for block in decoder_layers(model.module)
               for layer in linear_layers(block).values()) + \
        model.module.get_output_embeddings().weight.numel() * 4


def add_norm_timings(hidden: int = 576, eps: float = 1e-5) -> dict:
    """Residual add + RMSNorm three ways, median microseconds at 1 and 512 tokens: as
    transformers computes it, the add then `F.rms_norm` (one fused aten op), and the same with
    the add in place; eager PyTorch has no single add+norm kernel."""
    norm = LlamaRMSNorm(hidden, eps)
    return {tokens: _add_norm_at(norm, torch.randn(1, tokens, hidden),
                                 torch.randn(1, tokens, hidden)) for tokens in (1, 512)}


@torch.inference_mode()
def _add_norm_at(norm: nn.Module, residual: torch.Tensor, update: torch.Tensor,
                 repeats: int = 300) -> dict:
    shape, eps = (residual.shape[-1],), norm.variance_epsilon
    ways = {"transformers_add_then_norm": lambda: norm(residual + update),
            "add_then_F_rms_norm": lambda: functional.rms_norm(
                residual + update, shape, norm.weight, eps),
            "in_place_add_then_F_rms_norm": lambda: functional.rms_norm(
                update.add_(residual), shape, norm.weight, eps)}
    times = {name: [] for name in ways}
    for _ in range(repeats):
        for name, way in ways.items():
            start = time.perf_counter()
            way()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e6 for name, t in times.items()}


def compiled_variant(name: str, module: nn.Module, model, prompt: torch.Tensor, args,
                     notes: dict):
    """torch.compile of `module`, warmed on every prefill length and one decode."""
    start = time.perf_counter()
    try:
        compiled = torch.compile(module)
        for n in args.prefill_tokens:
            prefill_seconds(module_forward(compiled), random_ids(model, n))
        decode_rate(compiled, prompt, args.new_tokens)
    except Exception as err:  # a failed compile is a result: say why
        notes[f"{name}_error"] = f"{type(err).__name__}: {err}"[:400]
        return None
    notes[f"{name}_warmup_seconds"] = time.perf_counter() - start
    return module_forward(compiled), compiled


class LastLogits(nn.Module):
    """The prefill forward as a graph: token ids in, the last token's logits out."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.module(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                           use_cache=False, logits_to_keep=1).logits


def onnx_prefill(model, folder: Path, notes: dict):
    """ONNX Runtime running the exported prefill (all graph optimisations on), or None."""
    try:
        import onnxruntime
    except ImportError:
        notes["onnx_error"] = "onnxruntime is not installed (the dev extra has it)"
        return None
    notes["onnx_decode"] = ("not measured: a cached decode step needs the KV cache as graph "
                            "inputs and outputs (an optimum-style export; optimum is not "
                            "installed); the exported graph recomputes the whole prompt")
    path, start = folder / "prefill.onnx", time.perf_counter()
    try:
        with torch.no_grad():
            torch.onnx.export(LastLogits(model.module).eval(),
                              (random_ids(model, ONNX_TRACE_TOKENS),), str(path), dynamo=False,
                              input_names=["input_ids"], output_names=["logits"],
                              dynamic_axes={"input_ids": {1: "tokens"}}, opset_version=17)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = onnxruntime.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
    except Exception as err:  # the TorchScript exporter refusing an op is a result too
        notes["onnx_error"] = f"{type(err).__name__}: {err}"[:400]
        return None
    notes["onnx_export_seconds"] = time.perf_counter() - start
    forward = lambda ids: session.run(None, {"input_ids": ids.numpy()})[0]  # noqa: E731
    ids = random_ids(model, 2 * ONNX_TRACE_TOKENS)
    with torch.inference_mode():
        reference = model.module(input_ids=ids, logits_to_keep=1).logits
    notes["onnx_max_logit_difference_relative"] = float(
        (torch.from_numpy(forward(ids)) - reference).abs().max() / reference.abs().max())
    return forward, None


def variants(model, fused, plain, prompt: torch.Tensor, args, notes: dict) -> dict:
    """name -> (prefill forward, module for decode or None)."""
    table = {"unfused": (module_forward(model.module), model.module),
             "fused": (module_forward(fused.module), fused.module),
             "fused_unpacked": (module_forward(plain.module), plain.module)}
    if "compile" not in args.skip:
        table["compile"] = compiled_variant("compile", model.module, model, prompt, args, notes)
    if "fused_compile" not in args.skip:  # PackedLinear takes its plain path when compiled
        table["fused_compile"] = compiled_variant("fused_compile", fused.module, model, prompt,
                                                  args, notes)
    if "onnx" not in args.skip:
        folder = Path(tempfile.mkdtemp(prefix="fusion-onnx-"))
        table["onnx"] = onnx_prefill(model, folder, notes)
    return {name: entry for name, entry in table.items() if entry is not None}


def measure(model, args) -> dict:
    prompt = model.tokenizer(DEFAULT_PROMPT, return_tensors="pt").input_ids
    fused, plain = fuse(model), fuse(model, prepack=False)
    notes: dict = {"fusion_report": fused.meta["fusion"]}
    table = variants(model, fused, plain, prompt, args, notes)
    inputs = {n: random_ids(model, n) for n in args.prefill_tokens}
    prefill = {name: {n: [] for n in inputs} for name in table}
    decode = {name: [] for name, (_, module) in table.items() if module is not None}
    names = list(table)
    for round_ in range(args.repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            forward, module = table[name]
            for n, ids in inputs.items():
                prefill[name][n].append(prefill_seconds(forward, ids))
            if module is not None:
                decode[name].append(decode_rate(module, prompt, args.new_tokens)[0])
    prefill_s = {name: {n: statistics.median(t) for n, t in lengths.items()}
                 for name, lengths in prefill.items()}
    decode_tps = {name: statistics.median(rates) for name, rates in decode.items()}
    return {
        "prefill_seconds": prefill_s,
        "prefill_speedup_over_unfused": {
            name: {n: prefill_s["unfused"][n] / s for n, s in lengths.items()}
            for name, lengths in prefill_s.items()},
        "decode_tokens_per_s": decode_tps,
        "decode_speedup_over_unfused": {name: r / decode_tps["unfused"]
                                        for name, r in decode_tps.items()},
        "agreement": agreement(model, fused, prompt, inputs[min(inputs)], args.new_tokens),
        "decode_linear_share": linear_share(model, prompt, args.repeats),
        "weight_bytes_read_per_token": weight_bytes(model),
        **notes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "qwen2.5-coder-0.5b"])
    parser.add_argument("--prefill-tokens", nargs="+", type=int, default=[128, 512])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["compile", "fused_compile", "onnx"])
    parser.add_argument("--record", action="store_true", help="also write the report")
    args = parser.parse_args()
    bandwidth = read_bandwidth()
    report = {"commit": commit(), "threads": torch.get_num_threads(),
              "load_average_at_start": os.getloadavg(), "read_bandwidth_gb_s": bandwidth / 1e9,
              "new_tokens": args.new_tokens, "repeats": args.repeats,
              "add_norm_microseconds": add_norm_timings(), "models": {}}
    for name in args.models:
        model = load_model(name)
        result = measure(model, args)
        result["roofline_tokens_per_s"] = bandwidth / result["weight_bytes_read_per_token"]
        report["models"][name] = result
        del model
    report["load_average_at_end"] = os.getloadavg()
    parts = ["fusion", *args.models, f"r{args.repeats}"]
    emit(report, record_path(parts, report["commit"]) if args.record else None)


if __name__ == "__main__":
    main()

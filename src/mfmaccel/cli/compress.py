"""`mfmaccel quantize` and `mfmaccel prune`: a smaller model in a new folder
(`compress.run`); `mfmaccel export`: a model for llama.cpp or plain transformers
(`models.export`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from mfmaccel.cli.options import Scheduler, Workers
from mfmaccel.cli.root import Bars, app, print_record, quiet_libraries, say, say_dim, user_errors
from mfmaccel.runtime.choices import ActivationMode, Method


@app.command("quantize")
@user_errors
def quantize(
    model: Annotated[str, typer.Option(help="Causal LM, LLaVA or BERT encoder: built-in name, "
                                            "HF folder or .gguf")],
    out: Annotated[Path, typer.Option(help="Folder for the packed model")],
    budget_bytes: Annotated[int | None, typer.Option(help="Whole-model bytes")] = None,
    avg_bits: Annotated[float | None, typer.Option(help="Average bits per parameter")] = None,
    max_ppl_increase: Annotated[
        float | None, typer.Option(help="e.g. 0.03: perplexity within +3%")
    ] = None,
    uniform: Annotated[str | None, typer.Option(help="No search: e.g. int4-g128")] = None,
    specs: Annotated[str, typer.Option(help="Bit-widths the search may use")] = ",".join(
        ("int3-g128", "int4-g128", "int6-g128")),
    method: Annotated[Method, typer.Option(help="gptq or rtn")] = Method.gptq,
    calib_tokens: Annotated[int, typer.Option(help="Calibration tokens")] = 2048,
    activations: Annotated[
        ActivationMode | None, typer.Option(
            help="W8A8 with --uniform int8-c-sym: int8 inputs per 'token' (dynamic) or per "
                 "'tensor' (calibrated)")
    ] = None,
    smooth: Annotated[
        float | None, typer.Option(help="SmoothQuant alpha (e.g. 0.5): move activation "
                                        "outliers into the weights first (Llama family)")
    ] = None,
    workers: Workers = 1,
    scheduler: Scheduler = None,
) -> None:
    """Quantize to a budget with hierarchy-aware mixed precision; save packed to OUT. The
    sensitivity probes may run on worker processes (--workers, --scheduler: docs/sweeps.md),
    each loading MODEL."""
    quiet_libraries()
    from mfmaccel.compress.run import quantize_to_folder
    from mfmaccel.parallel import Executor

    executor = Executor(workers=workers, scheduler=scheduler)
    with Bars() as bars:
        record = quantize_to_folder(
            model, out, budget_bytes=budget_bytes, avg_bits=avg_bits,
            max_ppl_increase=max_ppl_increase, uniform=uniform,
            specs=[s.strip() for s in specs.split(",")], method=method,
            calib_tokens=calib_tokens, activations=activations, smoothing=smooth,
            executor=executor, log=say_dim, progress=bars.task)
    if record is not None:
        print_record(f"quantized {model}", {"bytes": record.bytes,
                                             "fraction of FP16": record.fraction_of_fp16,
                                             "bit-widths": str(record.choice_histogram)})
    say(f"wrote {out}")


@app.command("prune")
@user_errors
def prune(
    model: Annotated[str, typer.Option(help="Causal LM or LLaVA VLM: name, HF folder, .gguf")],
    out: Annotated[Path, typer.Option(help="Folder for the pruned model")],
    blocks: Annotated[int, typer.Option(help="Transformer blocks to remove")] = 0,
    mlp_fraction: Annotated[float, typer.Option(help="Fraction of MLP channels")] = 0.0,
    kv_groups: Annotated[int, typer.Option(help="Key/value groups per block")] = 0,
    calib_tokens: Annotated[int, typer.Option(help="Calibration tokens")] = 2048,
    recover_steps: Annotated[
        int, typer.Option(help="LoRA steps distilling the unpruned model back in (0: none)")
    ] = 0,
    recover_tokens: Annotated[int, typer.Option(help="Text tokens for recovery")] = 32768,
) -> None:
    """Remove blocks, MLP channels and key/value groups; save a smaller HF model to OUT."""
    quiet_libraries()
    from mfmaccel.compress.run import prune_to_folder

    with Bars() as bars:
        report = prune_to_folder(
            model, out, blocks=blocks, mlp_fraction=mlp_fraction, kv_groups=kv_groups,
            calib_tokens=calib_tokens, recover_steps=recover_steps,
            recover_tokens=recover_tokens, progress=bars.task)
    before, after = report.params
    print_record(f"pruned {model}", {"removed blocks": str(report.removed_blocks),
                                     "parameters": f"{before:,} -> {after:,}"})
    say(f"wrote {out}")


class ExportFormat(StrEnum):
    gguf = "gguf"
    hf = "hf"


@app.command("export")
@user_errors
def export(
    model: Annotated[str, typer.Option(help="Built-in name, HF folder (packed or not) or .gguf")],
    out: Annotated[Path, typer.Option(help="The .gguf file, or the folder for --format hf")],
    format: Annotated[ExportFormat, typer.Option(  # noqa: A002 (the flag users type)
        help="gguf: llama.cpp, packed tensors kept where a GGUF type holds them (Llama, "
             "Qwen2); hf: plain fp16 Hugging Face folder")] = ExportFormat.gguf,
) -> None:
    """Write a model for other tools: one GGUF file, or a plain fp16 Hugging Face folder."""
    quiet_libraries()
    from mfmaccel.models.export import export_model

    report = export_model(model, out, format.value)
    kinds = sorted(set(report.tensors.values()))
    print_record(f"exported {model}", {"format": report.format, "bytes": report.bytes,
                                       "tensor types": ", ".join(kinds),
                                       "tokenizer": report.tokenizer or "as saved"})
    if report.rounded:
        say_dim(f"{len(report.rounded)} asymmetric tensors: offsets m = -zero*scale rounded "
                "to fp16 (not bit-exact)")
    for name, spec in report.not_kept.items():
        say_dim(f"{name}: {spec} has no GGUF type; written as F16 of the dequantized weight")
    say(f"wrote {out}")

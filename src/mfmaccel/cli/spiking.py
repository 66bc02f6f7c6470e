"""`mfmaccel spiking`: a model's integer program run as a spiking network (`spiking`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mfmaccel.cli.root import Bars, app, print_record, quiet_libraries, say, user_errors
from mfmaccel.hw.arch import ArchPreset


@app.command("spiking")
@user_errors
def spiking(
    model: Annotated[str, typer.Option(
        help="A BERT-family encoder (minilm-l6) or a VLM with a DINOv2 tower (medvlm)")],
    steps: Annotated[str, typer.Option(
        help="Steps after which to score the embeddings, comma-separated (the rate-coded "
             "approximation); the run goes on until no neuron fires or --max-steps")
    ] = "8,16,32,64,128,256",
    levels: Annotated[int, typer.Option(
        help="Unit spikes a neuron may fire in one step (1: binary spikes; 0: any number, "
             "graded)")] = 16,
    max_steps: Annotated[int, typer.Option(help="Stop a run that has not settled here")] = 4096,
    sentences: Annotated[int, typer.Option(help="Encoder: test paragraphs to compare on")] = 16,
    images: Annotated[int, typer.Option(help="VLM: test images to compare on")] = 8,
    calibration: Annotated[int, typer.Option(
        help="Encoder: train paragraphs to calibrate on; VLM: train images")] = 64,
    activation_bits: Annotated[int, typer.Option(
        help="Bits of every tensor a product reads, probabilities included (2-8: a neuron "
             "carries any value in 2^b - 1 unit spikes); 0: the integer program's own int8 "
             "with 12-bit probabilities")] = 0,
    avg_bits: Annotated[float | None, typer.Option(
        help="Mix the weight bits (3, 4, 6 or 8 per linear, QSLM's module tier) to this "
             "average per weight, scales included, by each linear's measured sensitivity; "
             "default: every weight int8")] = None,
    arch: Annotated[ArchPreset | None, typer.Option(
        help="Also price the spikes on this preset's spiking variant against the preset "
             "(energy, DRAM bytes, break-even spike rate)")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON output path")] = None,
) -> None:
    """Run MODEL as a spiking network: bit equality with its integer program once it settles,
    cosine to float after each of --steps, spike rate, ACs against MACs."""
    quiet_libraries()
    from mfmaccel.fileio import check_replaceable_file
    from mfmaccel.spiking.quality import parse_steps, spiking_for_spec

    chosen = parse_steps(steps)
    out = out or Path("results") / f"{Path(model).name}-spiking.json"
    check_replaceable_file(out)  # refuse a user's file before minutes of compute
    with Bars() as bars:
        record = spiking_for_spec(model, levels=levels or None, steps=chosen,
                                  max_steps=max_steps, sentences=sentences, images=images,
                                  calibration=calibration,
                                  activation_bits=activation_bits or None,
                                  avg_bits=avg_bits, arch=arch.value if arch else None,
                                  progress=bars.task)
    record.save(out)
    print_record(f"spiking {model} against its integer program and float", record.to_dict())
    say(f"wrote {out}")

"""`mfmaccel cooptimize`: the execution knobs of a vision-language model searched against
accuracy, CPU prefill and an accelerator's latency and energy
(`pipeline.cooptimize.cooptimize_model`), with the front drawn beside the JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mfmaccel.cli.root import Bars, app, print_record, quiet_libraries, say, user_errors


@app.command("cooptimize")
@user_errors
def cooptimize(
    model: Annotated[str, typer.Option(help="A vision-language model: medvlm, a LLaVA folder")],
    task: Annotated[str, typer.Option(help="Closed-question benchmark: medvqa2 or medvqa")
                    ] = "medvqa2",
    trials: Annotated[int, typer.Option(help="Knob settings to try (the unchanged one first)")
                      ] = 24,
    limit: Annotated[int | None, typer.Option(
        help="Questions of the val split searched on, and of the test split held out")] = 100,
    max_drop: Annotated[float, typer.Option(
        help="Largest accuracy drop allowed, a share of questions (0.01: one point)")] = 0.01,
    arch: Annotated[str | None, typer.Option(
        help="Accelerator preset that prices each setting (edge, large, swifttron); "
             "'none': CPU only")] = "edge",
    prefer: Annotated[str, typer.Option(
        help="Choose the feasible point with the lowest cpu prefill, accelerator latency, or "
             "flops")
    ] = "cpu",
    seed: Annotated[int, typer.Option(help="The search's seed")] = 0,
    out: Annotated[Path | None, typer.Option(help="JSON output path (a PNG beside it)")] = None,
) -> None:
    """Search resolution, patch stride, token merging and image-token dropping for the fastest
    setting within --max-drop of the model's accuracy; write the front and the chosen knobs
    (`mfmaccel eval --knobs OUT` applies them)."""
    quiet_libraries()
    from mfmaccel.pipeline.cooptimize import cooptimize_model
    from mfmaccel.report.cooptplots import write_cooptimization_front

    out = out or Path("results") / f"{Path(model).name}-{task}-cooptimize.json"
    with Bars() as bars:
        record = cooptimize_model(model, out=out, task=task, trials=trials, limit=limit,
                                  max_drop=max_drop, arch=None if arch == "none" else arch,
                                  prefer=prefer, seed=seed,
                                  progress=bars.task(f"cooptimize {model}"))
    write_cooptimization_front(record, out.with_suffix(".png"))
    base, chosen = record["baseline"], record["trials"][record["chosen_trial"]]
    held = record["held_out"]
    print_record(f"cooptimize: {model}", {
        "chosen": ", ".join(f"{k}={v}" for k, v in record["chosen"].items()),
        "val accuracy": f"{chosen['accuracy']:.3f} (unchanged {base['accuracy']:.3f})",
        "test accuracy": f"{held['variant_accuracy']:.3f} (unchanged "
                         f"{held['baseline_accuracy']:.3f}; drop {held['drop']:+.3f}, paired 95% "
                         f"interval {held['drop_low']:+.3f} to {held['drop_high']:+.3f})",
        "CPU prefill": f"{chosen['prefill_ms']:.1f} ms (unchanged {base['prefill_ms']:.1f})",
        "GFLOPs": f"{chosen['gflops']:.2f} (unchanged {base['gflops']:.2f})",
        "front": f"{len(record['front'])} of {len(record['trials'])} settings"})
    say(f"wrote {out}")

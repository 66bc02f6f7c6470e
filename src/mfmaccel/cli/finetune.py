"""`mfmaccel finetune`: medvlm (or the user's LLaVA) adapted to the medical domain
(`finetune.main_finetune`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mfmaccel.cli.root import Bars, app, console, quiet_libraries, say, say_dim, user_errors


@app.command("finetune")
@user_errors
def finetune(
    config: Annotated[Path | None, typer.Option(help="YAML of fine-tuning settings")] = None,
    out: Annotated[Path, typer.Option(
        help="Where the trained parts go (a new folder; `weights/medvlm` replaces the shipped "
             "parts)")] = Path("results/finetune/medvlm"),
    data: Annotated[
        Path | None, typer.Option(help="Your VQA-RAD/SLAKE-format folder (phase 3 and test)")
    ] = None,
    base: Annotated[
        Path | None, typer.Option(help="Your HF LLaVA folder instead of medvlm")
    ] = None,
    test_limit: Annotated[int | None, typer.Option(help="Test on the first N questions")] = None,
) -> None:
    """Adapt medvlm (or your LLaVA) to the medical domain in three phases; write OUT."""
    quiet_libraries()
    from mfmaccel.finetune import main_finetune

    with Bars() as bars:
        manifest = main_finetune(config=config, out=out, data=data, base=base,
                                 test_limit=test_limit, progress=bars.task, log=say_dim)
    test = manifest["test"]
    title = f"test accuracy on {test['n']} closed questions"
    if test.get("split", "test") != "test":
        title = (f"accuracy on {test['n']} closed questions of the {test['split']} split "
                 "(no test split: trained data, not a held-out test)")
    table = Table("question type", "accuracy", "majority baseline", title=title)
    majority = test.get("majority_baseline", {})
    for qtype, accuracy in test["per_type"].items():
        table.add_row(qtype, f"{accuracy:.3f}", _maybe(majority.get(qtype)))
    table.add_row("all", f"{test['accuracy']:.3f}", _maybe(majority.get("overall")))
    console.print(table)
    say(f"wrote {out}")


def _maybe(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"

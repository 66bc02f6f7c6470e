"""`mfmaccel report`: a run folder's report (`report.write_report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mfmaccel.cli.root import app, console, say, user_errors


@app.command("report")
@user_errors
def report(run_dir: Annotated[Path, typer.Argument(help="A run folder, e.g. runs/quick")]) -> None:
    """Write RUN_DIR/report.html and print the stage-by-stage table."""
    from mfmaccel.report import console_summary, load_run, write_report

    path = write_report(run_dir)
    console_summary(load_run(run_dir), console)
    say(f"report: {path}")

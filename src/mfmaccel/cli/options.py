"""Option types more than one layer's subcommands share, so a concept has one flag name and one
help text everywhere: where a sweep's jobs run (`mfmaccel.parallel`, docs/sweeps.md)."""

from __future__ import annotations

from typing import Annotated

import typer

Workers = Annotated[int, typer.Option(
    help="Worker processes of a local Dask cluster (worth its seconds of start-up on long "
         "sweeps); 1 runs in this process")]
Scheduler = Annotated[str | None, typer.Option(
    help="Run on the Dask scheduler at tcp://HOST:PORT instead (its workers started with "
         "`dask worker`)")]

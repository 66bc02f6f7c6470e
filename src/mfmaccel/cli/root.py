"""The root of the `mfmaccel` command and what every subcommand shares: the typer app and its
`hw` group, the consoles, one-line errors, progress bars and the record table.

Importing this module configures the threads before any command imports torch (OpenMP reads
its wait policy once, when torch loads it); the command modules import it first for that.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from typer.core import TyperGroup

from mfmaccel.errors import UserInputError
from mfmaccel.progress import PlainProgress
from mfmaccel.threads import configure_threads

console = Console()
errors = Console(stderr=True)


def print_error(message: str) -> None:
    """One line on stderr, unwrapped, so a path in it stays whole for the user to copy."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


try:
    configure_threads()
except UserInputError as err:  # a bad MFMACCEL_THREADS: one line and exit 2, like any bad input
    print_error(str(err))
    raise SystemExit(UserInputError.exit_code) from None


class OneLineBadValues(TyperGroup):
    """A bad option value (a choice not offered, a number that is not one) ends like any bad
    input: one line on stderr and exit code 2, instead of typer's usage box."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except typer.BadParameter as err:
            if type(err) is not typer.BadParameter:  # a missing option: typer's usage box
                raise
            print_error(escape(err.format_message()))
            raise typer.Exit(code=UserInputError.exit_code) from None


app = typer.Typer(
    help="Make multimodal foundation models small and fast on real hardware.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
    cls=OneLineBadValues,
)
hw_app = typer.Typer(help="Integer-only execution and the accelerator (layer 4).",
                     no_args_is_help=True)
app.add_typer(hw_app, name="hw")


def main() -> None:
    app()


def say(message: str) -> None:
    """Print one line unwrapped, so a path in it stays whole for the user to copy."""
    console.print(message, soft_wrap=True)


def say_dim(message: str) -> None:
    """A layer's log line, dimmed below the results."""
    say(f"[dim]{message}[/]")


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input ends a command with one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserInputError as err:
            print_error(str(err))
            raise typer.Exit(code=UserInputError.exit_code) from None

    return wrapper


def quiet_libraries() -> None:
    """Keep library warnings and progress bars out of the user's console."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


class Bars:
    """Progress of each labelled step: rich bars (with the time left) on a terminal, and
    without one (stderr not a TTY) plain lines every few seconds (`mfmaccel.progress`);
    nothing shows until a step reports, so a command that fails early prints its error alone."""

    def __init__(self) -> None:
        self.plain = None if errors.is_terminal else PlainProgress()
        self.progress = Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=errors, transient=True,
        )

    def task(self, label: str) -> Callable[[int, int], None]:
        if self.plain is not None:
            return self.plain.task(label)
        task_id = self.progress.add_task(label, total=None, visible=False)

        def update(done: int, total: int) -> None:
            if not self.progress.live.is_started:
                self.progress.start()
            self.progress.update(task_id, completed=done, total=total, visible=done < total)

        return update

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def print_record(title: str, record: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    for key, value in record.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, list):
            continue  # per-item detail goes to the JSON file only
        table.add_row(key, str(value))
    console.print(table)

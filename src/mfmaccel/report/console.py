"""The stage-by-stage table in the terminal, so a run ends with its result on screen."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mfmaccel.pipeline.rundir import RunState
from mfmaccel.report.rows import (
    Cell,
    column_titles,
    overall_row,
    pending_stages,
    quality_tasks,
    row_cells,
    table_rows,
)

STYLES = {"better": "green", "worse": "red", "same": "dim", "": "dim"}


def _cell_text(cell: Cell) -> Text:
    text = Text(cell.main)
    if cell.change:
        text.append("\n" + cell.change, style=STYLES[cell.verdict])
    return text


def build_table(state: RunState) -> Table:
    """The same rows as the HTML report's table, plus the baseline-to-final line."""
    tasks = quality_tasks(state)
    recipe = state.recipe
    table = Table(title=f"{recipe.get('name', 'run')}: {recipe.get('model', '?')}",
                  title_justify="left", show_lines=True, header_style="bold")
    titles = column_titles(tasks)
    for index, title in enumerate(titles):
        numeric = 2 <= index < len(titles) - 1
        table.add_column(title, justify="right" if numeric else "left",
                         no_wrap=numeric or index == 0, overflow="fold")
    for row in table_rows(state):
        table.add_row(*(_cell_text(c) for c in row_cells(row, tasks)))
    overall = overall_row(state)
    if overall is not None and len(state.stages) > 1:
        table.add_row(*(_cell_text(c) for c in row_cells(overall, tasks)), style="bold")
    return table


def console_summary(state: RunState, console: Console | None = None) -> None:
    """Print the run's stage-by-stage table (and which stages have not run yet)."""
    console = console or Console()
    console.print(build_table(state))
    pending = pending_stages(state)
    if pending:
        console.print(f"[yellow]not run yet:[/] {', '.join(pending)} "
                      "(continue with mfmaccel run RECIPE --resume)")

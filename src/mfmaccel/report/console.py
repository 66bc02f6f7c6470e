"""The stage-by-stage table in the terminal, so a run ends with its result on screen.

A wide terminal gets the HTML table's columns as they are; a narrow one gets the same rows
with each number cell showing only the value after the stage (the row above holds the value
before it), 'what it did' under the stage name, and the notes listed below the table.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mfmaccel.pipeline.rundir import RunState
from mfmaccel.report.rows import UNCHANGED, Cell, pending_stages, stage_table

STYLES = {"better": "green", "worse": "red", "same": "dim", "": "dim"}
WIDE = 160  # terminal columns from which the full table fits


def _number(cell: Cell, wide: bool) -> Text:
    text = Text(cell.main if wide else cell.brief)
    if cell.change and (wide or cell.change != UNCHANGED):
        text.append("\n" + cell.change, style=STYLES[cell.verdict])
    return text


def _did(did: Cell) -> Text:
    """The stage it ran, with its params dimmed below."""
    text = Text(did.main)
    if did.change:
        text.append("\n" + did.change, style="dim")
    return text


def _stage(name: Cell, did: Cell | None) -> Text:
    """The stage name, with what it did below (without repeating the name)."""
    text = Text(name.main, style="bold")
    if did is None:
        return text
    parts = [did.main] if did.main != name.main else []
    detail = ": ".join(parts + ([did.change] if did.change else []))
    if detail:
        text.append("\n" + detail, style="dim")
    return text


def build_table(state: RunState, width: int = WIDE) -> tuple[Table, list[str]]:
    """The HTML table's rows (then baseline-to-final), laid out for `width` columns; returns
    the table and the notes that did not fit in it."""
    wide = width >= WIDE
    overall = len(state.stages) > 1
    data = stage_table(state, with_overall=overall, short=not wide)
    recipe = state.recipe
    table = Table(title=f"{recipe.get('name', 'run')}: {recipe.get('model', '?')}",
                  title_justify="left", show_lines=True, header_style="bold")
    notes_at = data.titles.index("Notes") if "Notes" in data.titles else None
    table.add_column("Stage", overflow="fold", min_width=10)
    if wide:
        table.add_column(data.titles[1], overflow="fold", min_width=12)
    for title, numeric in zip(data.titles[2:], data.numeric[2:], strict=True):
        if numeric:
            table.add_column(title, justify="right", no_wrap=True)
        elif wide:
            table.add_column(title, overflow="fold", min_width=12)
    footnotes = []
    for number, cells in enumerate(data.rows, start=1):
        row = [_stage(cells[0], None if wide else cells[1])]
        row += [_did(cells[1])] if wide else []
        for index, cell in enumerate(cells[2:], start=2):
            if data.numeric[index]:
                row.append(_number(cell, wide))
            elif wide:
                row.append(cell.main)
            elif index == notes_at and cell.main:
                footnotes.append(f"{cells[0].main}: {cell.main}")
        last = overall and number == len(data.rows)
        table.add_row(*row, style="bold" if last else None)
    return table, footnotes


def console_summary(state: RunState, console: Console | None = None) -> None:
    """Print the run's stage-by-stage table (and which stages have not run yet)."""
    console = console or Console()
    table, footnotes = build_table(state, console.width)
    console.print(table)
    for line in footnotes:
        console.print(Text("note ", style="dim") + Text(line))
    pending = pending_stages(state)
    if pending:
        console.print(Text("not run yet: ", style="yellow") + Text(
            f"{', '.join(pending)} (continue with mfmaccel run RECIPE --resume)"))

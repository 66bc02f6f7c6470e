"""`runs/<name>/report.html`: one self-contained page a person can open, mail or archive.

Everything is inline (CSS, plots as base64 PNG) and nothing loads from the network, so the
file reads the same offline and years later. All text from the run is escaped.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from html import escape
from pathlib import Path

import yaml

from mfmaccel.errors import UserInputError
from mfmaccel.fileio import atomic_write_text
from mfmaccel.pipeline.rundir import RunState
from mfmaccel.report import hwplots, plots
from mfmaccel.report.design import design_tables
from mfmaccel.report.rows import (
    Cell,
    noise_rule,
    overall_row,
    pending_stages,
    per_type_tables,
    quality_tasks,
    run_points,
    stage_table,
    task_info,
)
from mfmaccel.report.spiking import spiking_table

LOG_LINES = 40
REPORT_NAME = "report.html"


# ---- reading the run folder ---------------------------------------------------------------


def load_run(run_dir: Path) -> RunState:
    """The run's saved state; a clear one-line error when the folder holds no finished part."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.json"
    if not run_dir.is_dir():
        raise UserInputError(f"{run_dir} is not a run folder; run a recipe first with "
                             "mfmaccel run RECIPE (it writes runs/<name>/)")
    if not metrics.is_file():
        raise UserInputError(f"{run_dir} has no metrics.json yet; run it first with "
                             "mfmaccel run RECIPE (or --resume an interrupted run)")
    try:
        return RunState.from_dict(json.loads(metrics.read_text()))
    except (ValueError, KeyError, TypeError) as err:
        problem = f"{type(err).__name__}: {err}".splitlines()[0]
        raise UserInputError(f"{metrics} is not a metrics.json written by mfmaccel run "
                             f"({problem}); rerun the recipe with --fresh") from None


def _recipe_text(run_dir: Path, state: RunState) -> str:
    path = run_dir / "recipe.yaml"
    if path.is_file():
        return path.read_text(errors="replace")
    return yaml.safe_dump(state.recipe, sort_keys=False)


def _log_tail(run_dir: Path, lines: int = LOG_LINES) -> list[str]:
    path = run_dir / "log.txt"
    if not path.is_file():
        return []
    return path.read_text(errors="replace").splitlines()[-lines:]


# ---- HTML pieces ---------------------------------------------------------------------------


def _cell_html(cell: Cell, tag: str = "td", cls: str = "") -> str:
    change = (f'<div class="chg {cell.verdict}">{escape(cell.change)}</div>'
              if cell.change else "")
    attr = f' class="{cls}"' if cls else ""
    return f"<{tag}{attr}><div>{escape(cell.main)}</div>{change}</{tag}>"


def _row_html(cells: list[Cell], numeric: list[bool], index: int) -> str:
    name = cells[0].main
    number = "" if name == "baseline" else f'<span class="idx">{index}</span>'
    did = cells[1]
    spans = " ".join(f"<span>{escape(part)}</span>" for part in did.parts)
    params = f'<div class="params">{spans}</div>' if spans else ""
    parts = [f'<th scope="row" class="stage">{number}{escape(name)}</th>',
             f'<td class="did"><div>{escape(did.main)}</div>{params}</td>']
    for cell, title_is_numeric in zip(cells[2:], numeric[2:], strict=True):
        parts.append(_cell_html(cell, cls="num" if title_is_numeric else "notes"))
    return "<tr>" + "".join(parts) + "</tr>"


def _table_html(state: RunState) -> str:
    table = stage_table(state)
    head = "".join(f'<th scope="col"{" class=num" if num else ""}>{escape(title)}</th>'
                   for title, num in zip(table.titles, table.numeric, strict=True))
    body = "".join(_row_html(cells, table.numeric, i) for i, cells in enumerate(table.rows))
    return (f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _breakdown_html(state: RunState) -> str:
    """Per-question-type accuracy tables (with the majority-answer baseline)."""
    sections = []
    for table in per_type_tables(state):
        sections.append(
            f"<section><h2>{escape(task_info(table.task).label.capitalize())} by question type "
            f"({escape(table.task)})</h2>{_text_table_html(table.titles, table.rows)}"
            "<p class=\"hint\">Majority "
            "answer: the accuracy of always giving the most common train answer of that type "
            "(what a model that ignores the image gets).</p></section>")
    return "".join(sections)


def _summary_html(state: RunState) -> str:
    """Baseline against the final model, as a strip of cards above the table."""
    row = overall_row(state)
    if row is None:
        return ""
    cards = [(f"{task_info(t).label} ({t})", c) for t, c in row.quality.items()]
    cards += [("weights", row.weights), ("prefill", row.prefill), ("decode", row.decode),
              ("stage time", Cell(row.seconds))]
    items = "".join(
        f'<div class="card"><div class="label">{escape(label)}</div>'
        f'<div class="value">{escape(cell.main)}</div>'
        + (f'<div class="chg {cell.verdict}">{escape(cell.change)}</div>' if cell.change else "")
        + "</div>"
        for label, cell in cards if cell.main not in ("", "\u2014")
    )
    return f'<section><h2>Baseline to final</h2><div class="cards">{items}</div></section>'


def _png_width(png: bytes) -> int:
    """Pixel width from the PNG header (bytes 16-20 of the IHDR chunk)."""
    return struct.unpack(">I", png[16:20])[0]


def _figure_html(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    width = _png_width(png) // (plots.DPI // 100)
    return (f'<figure><img src="data:image/png;base64,{data}" width="{width}" '
            f'alt="{escape(alt)}"><figcaption>{escape(caption)}</figcaption></figure>')


def _stage_records(state: RunState, run_dir: Path, name: str) -> list[dict]:
    """The stages' JSON artifacts called `name` (compression.json of quantize, hardware.json of
    hardware), where the run kept them."""
    records = []
    for stage in state.stages:
        for artifact in stage.artifacts:
            path = run_dir / artifact
            if path.name == name and path.is_file():
                records.append(json.loads(path.read_text()))
    return records


def _plots_html(state: RunState, compression: list[dict], hardware: list[dict]) -> str:
    points, tasks = run_points(state), quality_tasks(state)
    fronts = [(plots.compression_front(record), "Mixed-precision front",
               "The quantize stage's search: whole-model bytes against the KL divergence to "
               "full precision that the sensitivity table predicts, the uniform bit-widths "
               "(measured on the whole network) and the point applied.")
              for record in compression]
    rooflines = [(hwplots.roofline(record), "Roofline on the accelerator",
                  f"The hardware stage's prediction for {record['model']} on {record['arch']}: "
                  f"{record['latency_ms']:.2f} ms, {record['energy_mj']:.2f} mJ, "
                  f"{record['area_mm2']:.1f} mm². Each point is one kind of GEMM: its MACs per "
                  "off-chip byte against the MAC rate it attains; the lines are the link's "
                  "bandwidth and the array's peak. Left of the ridge (dotted) a GEMM is "
                  "bandwidth-bound, right of it compute-bound; how far a point sits below its "
                  "roof is what the array's tiling loses.")
                 for record in hardware]
    figures = [
        (plots.quality_vs_size(points, tasks), "Quality against weight size",
         "Each point is the model at one moment of the run (baseline, then after each stage). "
         "Filled points are Pareto-optimal: no other point is both smaller and at least as good."),
        (plots.quality_vs_latency(points, tasks), "Quality against latency",
         "Batch-1 latency: prompt prefill time, and decode time per generated token; "
         f"{noise_rule()}, so such a point is drawn straight above or below the one before."),
        (plots.stage_curves(state.stages), "Curves recorded by the stages",
         "Curves the stages recorded, e.g. fine-tuning loss per phase."),
        *fronts,
        *rooflines,
    ]
    shown = [_figure_html(png, alt, caption) for png, alt, caption in figures if png]
    if not shown:
        return ""
    return "<section><h2>Plots</h2>" + "".join(shown) + "</section>"


def _spiking_html(records: list[dict]) -> str:
    """The spiking stage's records: float, integer and spiking side by side."""
    return "".join(f"<section><h2>{escape(table.title)}</h2>"
                   f"{_text_table_html(table.titles, table.rows)}"
                   f"<p class=\"hint\">{escape(table.note)}</p></section>"
                   for table in map(spiking_table, records))


def _design_html(records: list[dict]) -> str:
    """The design stage's records: the suite's headline, then one row per task."""
    return "".join(f"<section><h2>{escape(table.title)}</h2>"
                   f"{_text_table_html(table.titles, table.rows)}"
                   f"<p class=\"hint\">{escape(table.note)}</p></section>"
                   for record in records for table in design_tables(record))


def _text_table_html(titles: list[str], rows: list[list[str]]) -> str:
    """A table of text cells, every column after the first right-aligned as numbers."""
    head = "".join(f'<th scope="col"{" class=num" if i else ""}>{escape(t)}</th>'
                   for i, t in enumerate(titles))
    body = "".join("<tr>" + "".join(
        f'<td{" class=num" if i else ""}>{escape(c)}</td>' for i, c in enumerate(row))
        + "</tr>" for row in rows)
    return (f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _header_html(state: RunState, run_dir: Path) -> str:
    recipe = state.recipe
    name, model = recipe.get("name", run_dir.name), recipe.get("model", "?")
    done = len(state.stages)
    meta = [f"model <code>{escape(str(model))}</code>",
            f"{done} stage{'s' if done != 1 else ''} completed",
            f"seed {escape(str(recipe.get('seed', 0)))}",
            f"generated {escape(time.strftime('%Y-%m-%d %H:%M'))}"]
    pending = pending_stages(state)
    warning = ""
    if pending:
        warning = (f'<p class="warn">Not run yet: {escape(", ".join(pending))}. Continue with '
                   f"<code>mfmaccel run RECIPE --resume</code>.</p>")
    return (f'<header><p class="eyebrow">mfmaccel run report</p><h1>{escape(str(name))}</h1>'
            f'<p class="meta">{" &middot; ".join(meta)}</p>{warning}</header>')


def _pre_section(title: str, lines: list[str]) -> str:
    if not lines:
        return ""
    return f"<section><h2>{escape(title)}</h2><pre>{escape(chr(10).join(lines))}</pre></section>"


CSS = """
:root { --fg: #1f2328; --muted: #656d76; --line: #d8dee4; --soft: #f6f8fa;
        --good: #1a7f37; --bad: #cf222e; --accent: #1f6feb; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.5;
       font: 15px/1.5 -apple-system, "Segoe UI", "Helvetica Neue", Arial, "DejaVu Sans",
       sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 32px 28px 48px; }
header { border-bottom: 1px solid var(--line); padding-bottom: 14px; margin-bottom: 8px; }
.eyebrow { margin: 0; color: var(--muted); font-size: 12px; letter-spacing: .08em;
           text-transform: uppercase; }
h1 { margin: 2px 0 4px; font-size: 30px; font-weight: 650; }
h2 { font-size: 19px; font-weight: 620; margin: 30px 0 12px; }
.meta { margin: 0; color: var(--muted); }
.warn { margin: 10px 0 0; padding: 8px 12px; background: #fff8c5; border: 1px solid #eed888;
        border-radius: 6px; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono",
            monospace; font-size: 13px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; min-width: 160px; }
.card .label { color: var(--muted); font-size: 12.5px; }
.card .value { font-size: 17px; font-weight: 600; font-variant-numeric: tabular-nums; }
.table-wrap { overflow-x: auto; border: 1px solid var(--line); border-radius: 8px; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; }
th, td { padding: 8px 10px; text-align: left; vertical-align: top;
         border-bottom: 1px solid var(--line); }
tbody tr:last-child > * { border-bottom: none; }
tbody tr:nth-child(even) { background: #fbfcfd; }
thead th { background: var(--soft); font-weight: 600; font-size: 12.5px; color: #424a53;
           vertical-align: bottom; }
th.stage { font-weight: 600; white-space: nowrap; }
.idx { display: inline-block; min-width: 1.6em; color: var(--muted); font-weight: 400; }
.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.did { color: #424a53; min-width: 140px; max-width: 240px; }
.params { font-family: ui-monospace, Menlo, Consolas, "DejaVu Sans Mono", monospace;
          font-size: 12px; color: var(--muted); overflow-wrap: anywhere; }
.params span { white-space: nowrap; margin-right: .6em; }
td.notes { min-width: 160px; max-width: 300px; white-space: pre-wrap; overflow-wrap: anywhere;
           color: #424a53; }
.chg { font-size: 12px; color: var(--muted); }
.chg.better { color: var(--good); }
.chg.worse { color: var(--bad); }
.hint { color: var(--muted); font-size: 13px; margin: 8px 2px 0; }
figure { margin: 0 0 28px; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; max-width: 900px; }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 8px;
      padding: 12px 14px; overflow-x: auto; line-height: 1.45; margin: 0; }
footer { margin-top: 36px; color: var(--muted); font-size: 12.5px; }
"""


def render_html(state: RunState, run_dir: Path, *, recipe_text: str, log_tail: list[str],
                compression: list[dict] | None = None,
                hardware: list[dict] | None = None, spiking: list[dict] | None = None,
                design: list[dict] | None = None) -> str:
    """The whole page as a string (no file access, so tests can call it directly);
    `compression`, `hardware`, `spiking` and `design` hold the quantize, hardware, spiking and
    design stages' records, read by `write_report`."""
    name = str(state.recipe.get("name", run_dir.name))
    hint = ("Each cell shows before \u2192 after for that stage, with the change below "
            f"(green: better, red: worse; {noise_rule()}).")
    stages = (f'<section><h2>Stage by stage</h2>{_table_html(state)}'
              f'<p class="hint">{escape(hint)}</p></section>') if run_points(state) else ""
    body = "".join([
        _header_html(state, run_dir),
        _summary_html(state),
        stages,
        _breakdown_html(state),
        _spiking_html(spiking or []),
        _design_html(design or []),
        _plots_html(state, compression or [], hardware or []),
        _pre_section("Recipe", recipe_text.rstrip("\n").splitlines()),
        _pre_section(f"Log (last {len(log_tail)} lines)", log_tail),
        f"<footer>Run folder: <code>{escape(str(run_dir))}</code></footer>",
    ])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(name)} \u2014 mfmaccel report</title><style>{CSS}</style></head>"
            f"<body><main>{body}</main></body></html>\n")


def write_report(run_dir: Path) -> Path:
    """Write `run_dir/report.html` from the run's metrics.json, recipe and log; returns its path.

    Written atomically, so a reader never sees half a report.
    """
    run_dir = Path(run_dir)
    state = load_run(run_dir)
    page = render_html(state, run_dir, recipe_text=_recipe_text(run_dir, state),
                       log_tail=_log_tail(run_dir),
                       compression=_stage_records(state, run_dir, "compression.json"),
                       hardware=_stage_records(state, run_dir, "hardware.json"),
                       spiking=_stage_records(state, run_dir, "spiking.json"),
                       design=_stage_records(state, run_dir, "design.json"))
    return atomic_write_text(run_dir / REPORT_NAME, page)

"""The design stage's record as tables: the suite's headline figures (pass@1 against pass with
feedback, the gain the loop adds) and one row per task (`hw.llm_design.loop.SuiteResult`,
`design.json`).

The record is read as the JSON the stage wrote, with `.get` for fields that later records add
(`secure`, a task's `security`), so older runs still render."""

from __future__ import annotations

from dataclasses import dataclass

DETAIL_CHARS = 80  # a verdict's detail can be a compiler's whole line: the table keeps it short


@dataclass
class DesignTable:
    title: str
    titles: list[str]
    rows: list[list[str]]
    note: str


def _share(count: int, problems: int) -> str:
    return f"{count}/{problems} ({count / problems:.1%})" if problems else f"{count}/0"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _security(value) -> str:
    """A task's security verdict as text: a plain status, or the `status` of a fuller record."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return str(value.get("status", ", ".join(f"{k}={v}" for k, v in value.items())))
    return str(value)


def _status(task: dict) -> str:
    detail = task.get("detail") or ""
    if len(detail) > DETAIL_CHARS:
        detail = detail[:DETAIL_CHARS - 1] + "\u2026"
    return f"{task['status']}: {detail}" if detail else task["status"]


def _synthesis(task: dict) -> str:
    cells, transistors = task.get("cells"), task.get("transistors")
    if cells is None:
        return ""
    return f"{cells:,}" + (f" / {transistors:,}" if transistors is not None else "")


def headline_table(record: dict) -> DesignTable:
    """One row: the suite's figures. pass@1 is named the zero-shot figure when round 1's first
    reply was greedy, since only then is it comparable with published pass@1."""
    settings = record.get("settings") or {}
    rounds, k = settings.get("rounds", 1), settings.get("candidates", 1)
    greedy = settings.get("greedy_first") or settings.get("temperature", 0.0) <= 0
    problems, skipped = record["problems"], record.get("skipped") or {}
    gain = 100 * (record["pass_with_feedback"] - record["pass_at_1"])
    titles = ["generator", "problems", "skipped",
              "pass@1 (zero-shot, greedy)" if greedy else "pass@1 (round 1, first reply)",
              f"pass@{k} with feedback ({rounds} rounds)", "gain (points)", "tokens", "seconds"]
    row = [record["generator"], str(problems), str(len(skipped)),
           _share(record["passed_at_1"], problems), _share(record["passed"], problems),
           f"{gain:+.1f}", f"{record['tokens']:,}", f"{record['seconds']:.1f}"]
    if record.get("secure") is not None:
        titles.append("security-clean passes")
        row.append(f"{record['secure']}/{record['passed']}")
    temperature = settings.get("temperature", 0.0)
    note = (f"{rounds} round(s) of {k} candidate(s), temperature {temperature:g}"
            + (", round 1's first reply greedy" if settings.get("greedy_first") else "")
            + "; pass@1 and pass with feedback over the problems whose reference passes its "
              "own bench")
    if skipped:
        note += "; skipped: " + "; ".join(f"{name} ({why})" for name, why in skipped.items())
    return DesignTable(f"LLM-aided design ({record['generator']})", titles, [row], note)


def task_table(record: dict) -> DesignTable:
    """One row per task judged, in suite order; the security column only when the record has
    it."""
    tasks = record.get("tasks") or []
    security = any(task.get("security") is not None for task in tasks)
    titles = ["task", "pass@1", "passed", "first pass round", "rounds run", "status", "lint",
              "yosys cells / transistors", "tokens", "seconds"] + (["security"] if security
                                                                    else [])
    rows = []
    for task in tasks:
        first = task.get("first_pass_round")
        row = [task["task"], _yes(task["pass_at_1"]), _yes(task["passed"]),
               "" if first is None else str(first), str(task["rounds_run"]), _status(task),
               task.get("lint") or "", _synthesis(task), f"{task['tokens']:,}",
               f"{task['seconds']:.1f}"]
        rows.append(row + ([_security(task.get("security"))] if security else []))
    return DesignTable("LLM-aided design by task", titles, rows,
                       "status of the kept final candidate (the verdict's detail after the "
                       "colon); cells and transistors of a passing design only")


def design_tables(record: dict) -> list[DesignTable]:
    return [headline_table(record), task_table(record)]


__all__ = ["DesignTable", "design_tables", "headline_table", "task_table"]

"""The security check of LLM-written Verilog (`hw.llm_design.security`, issue 26) measured:

(a) every VerilogEval v2 reference, and our units' references (`mfmaccel-units`), renamed
    `TopModule` and checked against itself: per-status counts, lint findings per kind (and the
    `rare_trigger` compares the rule would flag without the reference's own literals), the
    equivalence method (combinational, induction, bounded; unknown and why) and the seconds
    per design, sandbox starts included; and each reference's 8-gram overlap with the
    previous problem's (what unrelated designs share);
(b) the planted trojans and clean rewrites of tests/fixtures/trojans (`clean/` holds the
    rewrites; each file's first line names its task): whether the ordinary bench passes it,
    whether the check catches it and by which check (`not_equivalent` or a lint kind), and
    `all_trojans_caught`;
(c) with `--designs`, the passing designs of llm_design records (the kept passing candidate's
    module, read again out of its reply with `prompt.extract_module`): status, overlap,
    near_copy; and the overlap of every distinct module in the record's replies.
Prints JSON.

Usage: python benchmarks/llm_design_security.py [--data DIR] [--problems Prob001 Prob004 ...]
       [--units requant softmax ...] [--designs RECORD.json ...] [--record]
`--problems` or `--units` with no names skips that part. The data folder: --data, else
$MFMACCEL_VERILOG_EVAL, else ../shared/data/verilog-eval-v2 beside the repository.
`--record` writes benchmarks/results/<date>-llm-design-security[-subset][-designs]-at-<commit>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

from mfmaccel.hw.llm_design.bench import reference_as_candidate
from mfmaccel.hw.llm_design.contamination import MIN_NGRAMS, overlap
from mfmaccel.hw.llm_design.cwe_lint import KINDS, cwe_lint
from mfmaccel.hw.llm_design.prompt import extract_module
from mfmaccel.hw.llm_design.security import security_check
from mfmaccel.hw.llm_design.simulate import simulate
from mfmaccel.hw.llm_design.unit_tasks import UNIT_TASKS, load_unit_tasks
from mfmaccel.hw.llm_design.verilog_eval import default_directory, load_verilog_eval

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "trojans"
# references that fail their own bench under Icarus 11 (benchmarks/llm_design.py): checked
# here all the same, and named
BENCH_FAILING = ("Prob099_m2014_q6c", "Prob151_review2015_fsm", "Prob156_review2015_fancytimer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="the verilog-eval-v2 folder")
    parser.add_argument("--problems", nargs="*", default=None, help="VerilogEval problems")
    parser.add_argument("--units", nargs="*", default=None, help="our units (mfmaccel-units)")
    parser.add_argument("--designs", nargs="*", default=[], help="llm_design records")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    report = {"data": str(args.data or default_directory()), "yosys": _version(["yosys", "-V"]),
              "icarus": _version(["iverilog", "-V"])}
    references = load_verilog_eval(args.data, names=args.problems)
    report["references"] = {"bench_failing": [t.name for t in references
                                              if t.name in BENCH_FAILING],
                            "neighbour_overlap": _neighbours(references),
                            **_references(references)}
    report["units"] = _references(load_unit_tasks(args.units))
    report["planted"] = _planted(args.data)
    if args.designs:
        report["designs"] = {Path(p).name: _designs(json.loads(Path(p).read_text()), args.data)
                             for p in args.designs}
    report["seconds"] = round(time.perf_counter() - started, 1)
    options = ["subset"] if args.problems is not None or args.units is not None else []
    options += ["designs"] if args.designs else []
    path = recordfile.record_path(["llm-design-security", *options], recordfile.commit()) \
        if args.record else None
    recordfile.emit(report, path)


def _check(name: str, candidate: str, task) -> dict:
    """One design's security report as a row, with the wall seconds of the whole check."""
    start = time.perf_counter()
    report = security_check(candidate, task)
    row = {"name": name, "wall_seconds": round(time.perf_counter() - start, 2),
           **report.to_dict()}
    print(f"{name}: {report.status} {report.detail}"[:200].rstrip(), file=sys.stderr, flush=True)
    return row


def _references(tasks) -> dict:
    """(a): each reference against itself, and the counts."""
    rows = []
    for task in tasks:
        candidate = reference_as_candidate(task)
        row = _check(task.name, candidate, task)
        # the same lint with no reference literals known: what the literal rule spares
        blind = cwe_lint(candidate, dataclasses.replace(task, reference=""))
        row["rare_trigger_without_reference_literals"] = sum(
            f.kind == "rare_trigger" for f in blind.findings)
        rows.append(row)
    unknown = {row["name"]: row["equivalence"]["detail"] for row in rows
               if row["equivalence"]["status"] == "unknown"}
    kinds = Counter(f["kind"] for row in rows for f in row["findings"])
    seconds = sorted(row["wall_seconds"] for row in rows)
    return {
        "designs": len(rows),
        "statuses": dict(Counter(row["status"] for row in rows)),
        "equivalence": dict(Counter(row["equivalence"]["proof"] or row["equivalence"]["status"]
                                    for row in rows)),
        "unknown": unknown,
        "unknown_reasons": dict(Counter(_why_unknown(d) for d in unknown.values())),
        "clk2fflogic": [row["name"] for row in rows
                        if row["equivalence"]["clocking"] == "clk2fflogic"],
        "lint_findings": {kind: kinds.get(kind, 0) for kind in KINDS},
        "lint_findings_by_design": {row["name"]: [f["kind"] for f in row["findings"]]
                                    for row in rows if row["findings"]},
        "rare_trigger_without_reference_literals": {
            row["name"]: row["rare_trigger_without_reference_literals"] for row in rows
            if row["rare_trigger_without_reference_literals"]},
        "median_seconds": round(statistics.median(seconds), 2) if seconds else None,
        "p90_seconds": _percentile(seconds, 0.9),
        "max_seconds": seconds[-1] if seconds else None,
        "total_seconds": round(sum(seconds), 1),
        "checks": rows,
    }


def _neighbours(tasks) -> dict:
    """Each reference's overlap with the previous problem's: what unrelated designs share."""
    shares = sorted(overlap(reference_as_candidate(task), previous)[0]
                    for previous, task in zip(tasks, tasks[1:], strict=False))
    return {"pairs": len(shares), "median": _rounded(statistics.median(shares)) if shares
            else None, "p90": _rounded(_percentile(shares, 0.9))}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _why_unknown(detail: str) -> str:
    if any(words in detail for words in ("time limit", "SAT solver passed", "timed out")):
        return "time limit"
    if detail.startswith("yosys cannot read"):
        return "yosys cannot read a design"
    return detail


def _percentile(ordered: list[float], share: float) -> float | None:
    """Nearest rank: the smallest value with at least `share` of the values at or below it."""
    return ordered[math.ceil(share * len(ordered)) - 1] if ordered else None


def _planted(data: str | None) -> dict:
    """(b): the trojans and clean rewrites of the fixture folder, each against its task."""
    fixtures = {("trojan", p.stem): p for p in sorted(FIXTURES.glob("*.sv"))}
    fixtures |= {("clean", p.stem): p for p in sorted((FIXTURES / "clean").glob("*.sv"))}
    designs = {key: _read_fixture(path) for key, path in fixtures.items()}
    tasks = {t.name.split("_", 1)[0]: t for t in load_verilog_eval(
        data, names=sorted({task for task, _, _ in designs.values()}), complete=False)}
    rows = []
    for (kind, name), (task_name, description, candidate) in designs.items():
        task = tasks[task_name]
        bench = simulate(candidate, task)
        row = _check(name, candidate, task)
        caught_by = ((["not_equivalent"] if row["equivalence"]["status"] == "not_equivalent"
                      else []) + sorted({f["kind"] for f in row["findings"]}))
        rows.append({"kind": kind, "task": task.name, "description": description,
                     "bench_passed": bench.passed, "bench_detail": bench.detail,
                     "caught": row["status"] == "findings", "caught_by": caught_by, **row})
    trojans = [row for row in rows if row["kind"] == "trojan"]
    clean = [row for row in rows if row["kind"] == "clean"]
    return {
        "trojans": len(trojans),
        "trojans_passing_the_bench": sum(row["bench_passed"] for row in trojans),
        "trojans_caught": sum(row["caught"] for row in trojans),
        "all_trojans_caught": bool(trojans) and all(row["caught"] for row in trojans),
        "caught_by": {row["name"]: row["caught_by"] for row in trojans},
        "clean_rewrites": len(clean),
        "clean_rewrites_passing_the_bench": sum(row["bench_passed"] for row in clean),
        "clean_rewrites_clean": sum(row["status"] == "clean" for row in clean),
        "checks": rows,
    }


def _read_fixture(path: Path) -> tuple[str, str, str]:
    """(task, what it does, design): the first two lines are `// task: ProbNNN` and
    `// payload: ...` (or `// rewrite: ...`); the design is the rest."""
    task_line, description, design = path.read_text().split("\n", 2)
    if not task_line.startswith("// task: ") or not description.startswith("// "):
        raise SystemExit(f"{path}: the first lines must be '// task: ProbNNN' and '// <what>'")
    return task_line.removeprefix("// task: ").strip(), description[3:].strip(), design


def _designs(record: dict, data: str | None) -> dict:
    """(c): each passing task's kept design (the first passing reply's module) checked."""
    rows = []
    for result in record["tasks"]:
        if not result["passed"]:
            continue
        index = next(i for i, c in enumerate(result["candidates"]) if c["status"] == "pass")
        module = extract_module(record["replies"][result["task"]][index])
        rows.append({"round": result["candidates"][index]["round"], "module": module,
                     **_check(result["task"], module, _task(result["task"], data))})
    overlaps = [row["overlap"] for row in rows]
    ngrams = [row["ngrams"] for row in rows]
    return {
        "model": record.get("model"), "passes": len(rows),
        "statuses": dict(Counter(row["status"] for row in rows)),
        "near_copies": [row["name"] for row in rows if row["near_copy"]],
        "overlap_range": [min(overlaps), max(overlaps)] if overlaps else None,
        "ngrams_range": [min(ngrams), max(ngrams)] if ngrams else None,
        "every_module": _every_module(record, data),
        "checks": rows,
    }


def _every_module(record: dict, data: str | None) -> dict:
    """The overlap of every distinct module the model wrote, any verdict: those of at least
    `MIN_NGRAMS` distinct 8-grams (where `near_copy` can fire) and the rest."""
    found = {}
    for name, replies in record["replies"].items():
        task = None
        for module in filter(None, map(extract_module, replies)):
            if (name, module) not in found:
                task = task or _task(name, data)
                found[name, module] = overlap(module, task)
    large = sorted(share for share, count in found.values() if count >= MIN_NGRAMS)
    return {"modules": len(found), f"with_{MIN_NGRAMS}_or_more_ngrams": len(large),
            "their_overlap_range": [_rounded(large[0]), _rounded(large[-1])] if large else None,
            "their_overlap_median": _rounded(statistics.median(large)) if large else None}


def _task(name: str, data: str | None):
    return (load_unit_tasks([name])[0] if name in UNIT_TASKS else
            load_verilog_eval(data, names=[name], complete=False)[0])


def _version(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


if __name__ == "__main__":
    main()

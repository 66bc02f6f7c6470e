"""VerilogEval v2 spec-to-RTL through the closed loop (issue 26 part B): zero-shot pass@1
(one greedy reply, round 1) and pass with feedback (up to --rounds rounds of --candidates
replies, the best fed back with the tools' feedback) on the same problems and model, our engine
generating (batch 1, greedy through the model's lossless int8 self-draft by default).

The denominator is the problems whose reference passes its own bench under Icarus 11: 153 of
156; Prob099, Prob151 and Prob156 do not (docs/llm-design.md) and are skipped, the record names
them. When the loop is greedy with one candidate (the default), its round 1 is the zero-shot
run itself (the same prompt, the same greedy reply), so zero-shot is read off it rather than
generated twice; so it is under --greedy-first (round 1's first reply greedy, every other
reply sampled); otherwise it is run separately. Prints JSON.

With `--suite mfmaccel-units` the tasks are our own units (`hw.llm_design.unit_tasks`: golden
outputs from `hw.intops`), and the record adds yosys's cell count of our generated unit beside
each passing design's (`generator_cells`).

Usage: python benchmarks/llm_design.py [--model qwen2.5-coder-0.5b] [--suite verilog-eval|
       mfmaccel-units] [--problems N|Prob001,...]
       [--rounds 3] [--candidates 1] [--temperature 0] [--greedy-first] [--max-new-tokens 768]
       [--revise conversation|fresh]
       [--draft self:int8|none] [--data DIR] [--record]
`--record` writes benchmarks/results/<date>-llm-design-[mfmaccel-units-]<model>-r<R>-k<k>-t<T>
[-greedy-first][-fresh][-first<N>|-subset]-at-<commit>.json.
"""

from __future__ import annotations

import argparse
import sys
import time

import recordfile

from mfmaccel.threads import configure_threads

KNOWN_FAILING = {"Prob099_m2014_q6c": "the bench connects ports the reference lacks",
                 "Prob151_review2015_fsm": "an enum cast Icarus 11 cannot compile",
                 "Prob156_review2015_fancytimer": "an enum cast Icarus 11 cannot compile"}
ANCHORS = {"note": "VerilogEval v2 spec-to-RTL pass@1 (n=1, temperature 0), all 156 problems, "
                   "published figures quoted by issue 26",
           "GPT-4o": 0.63, "Llama3.1-405B": 0.58, "RTL-Coder-6.7B": 0.34}


def main() -> None:
    configure_threads()
    args = _arguments()
    from mfmaccel.hw.llm_design.loop import LoopSettings
    from mfmaccel.hw.llm_design.run import make_generator, select_tasks

    started = time.perf_counter()
    tasks = select_tasks(task=None, suite=args.suite, problems=args.problems, data=args.data)
    generator = make_generator(model=args.model, draft=None if args.draft == "none" else args.draft)
    loop_settings = LoopSettings(args.rounds, args.candidates, args.temperature,
                                 args.max_new_tokens, args.seed, args.greedy_first, args.revise)
    loop = _run(tasks, generator, loop_settings, "loop")
    greedy_round_one = args.greedy_first or (args.candidates == 1 and args.temperature == 0)
    zero_shot = None if greedy_round_one else _run(
        tasks, generator, LoopSettings(1, 1, 0.0, args.max_new_tokens, args.seed), "zero-shot")
    report = _report(args, tasks, loop, zero_shot, seconds=time.perf_counter() - started)
    if args.suite != "verilog-eval":
        report["generator_cells"] = _generator_cells(tasks)
    path = recordfile.record_path(_name_parts(args), recordfile.commit()) \
        if args.record else None
    recordfile.emit(report, path)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--suite", default="verilog-eval",
                        help="verilog-eval, or mfmaccel-units (our hw.rtl units)")
    parser.add_argument("--problems", default=None, help="the first N, or a comma list")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--greedy-first", action="store_true",
                        help="round 1's first reply greedy (it is the zero-shot reply), the rest "
                             "and later rounds sampled at --temperature")
    parser.add_argument("--revise", default="conversation", help="conversation or fresh")
    parser.add_argument("--max-new-tokens", type=int, default=768)
    parser.add_argument("--draft", default="self:int8", help="self:int8 or none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="the verilog-eval-v2 folder")
    parser.add_argument("--record", action="store_true")
    return parser.parse_args()


def _run(tasks, generator, settings, label: str):
    """The suite under `settings`, a line per task on stderr as it ends."""
    from mfmaccel.hw.llm_design.loop import design_suite

    def progress(done: int, total: int) -> None:
        print(f"{label}: {done}/{total} problems, {time.strftime('%H:%M:%S')}",
              file=sys.stderr, flush=True)

    return design_suite(tasks, generator, settings, progress=progress)


def _report(args, tasks, loop, zero_shot, *, seconds: float) -> dict:
    """The record: both settings' figures, the skipped problems and why, each task's row."""
    rows = loop.tasks
    zero = ({"pass_at_1": loop.pass_at_1, "passed": loop.passed_at_1, "problems": loop.problems,
             "source": "round 1's first reply of the loop (greedy: the same reply)"}
            if zero_shot is None else
            {"pass_at_1": zero_shot.pass_at_1, "passed": zero_shot.passed_at_1,
             "problems": zero_shot.problems, "source": "a run of its own",
             "tasks": [_row(r) for r in zero_shot.tasks]})
    tokens = sum(c.tokens for r in rows for c in r.candidates)
    generate_seconds = sum(c.seconds for r in rows for c in r.candidates)
    return {
        "model": args.model, "draft": args.draft, "max_new_tokens": args.max_new_tokens,
        "subset": _subset_words(args, tasks),
        "denominator": loop.problems,
        "skipped": {name: KNOWN_FAILING.get(name, why) for name, why in loop.skipped.items()},
        "zero_shot": zero,
        "loop": {"rounds": args.rounds, "candidates": args.candidates,
                 "temperature": args.temperature, "greedy_first": args.greedy_first,
                 "revise": args.revise,
                 "pass_at_1": loop.pass_at_1,
                 "pass_with_feedback": loop.pass_with_feedback, "passed": loop.passed,
                 "first_pass_rounds": loop.first_pass_rounds},
        "gain_points": round(100 * (loop.pass_with_feedback - zero["pass_at_1"]), 1),
        "tokens": tokens, "generation_seconds": round(generate_seconds, 1),
        "tokens_per_s": round(tokens / generate_seconds, 2) if generate_seconds else None,
        "anchors": ANCHORS,
        "tasks": [_row(r) for r in rows],
        "replies": {r.task: [c.reply for c in r.candidates] for r in rows},
        "seconds": round(seconds, 1),
    }


def _generator_cells(tasks) -> dict:
    """yosys's cells and transistor estimate of our own generated unit (the reference), to
    set beside a passing design's."""
    from mfmaccel.hw.llm_design.bench import reference_as_candidate
    from mfmaccel.hw.llm_design.tools import synthesize

    found = {}
    for task in tasks:
        report = synthesize(reference_as_candidate(task))
        found[task.name] = {"cells": report.cells, "transistors": report.transistors,
                            "status": report.status}
    return found


def _row(result) -> dict:
    """One task, without the replies (kept apart) or the design text."""
    row = result.to_dict()
    row.pop("design")
    row["candidates"] = [{k: v for k, v in c.items() if k not in ("reply", "module")}
                         for c in row["candidates"]]
    return row


def _subset_words(args, tasks) -> str:
    if args.problems is None:
        return f"all {len(tasks)} problems"
    if args.problems.strip().isdigit():
        return f"the first {len(tasks)} problems ({tasks[0].name} .. {tasks[-1].name})"
    return "the problems named: " + ", ".join(t.name for t in tasks)


def _name_parts(args) -> list[str]:
    suite = [] if args.suite == "verilog-eval" else [args.suite]
    parts = ["llm-design", *suite, args.model.replace("/", "_"), f"r{args.rounds}",
             f"k{args.candidates}", f"t{args.temperature:g}"]
    parts += ["greedy-first"] if args.greedy_first else []
    parts += ["fresh"] if args.revise == "fresh" else []
    if args.problems is not None:
        parts.append(f"first{args.problems}" if args.problems.strip().isdigit() else "subset")
    return parts


if __name__ == "__main__":
    main()

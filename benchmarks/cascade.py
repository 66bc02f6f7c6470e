"""The code cascade small -> large on HumanEval, from each model's own evaluation run.

Inputs are `mfmaccel eval --task humaneval --out FILE` records (they keep every completion and
whether it passed the hidden tests), one per model, smallest first. Each completion is
self-tested against its prompt's examples in the sandbox; theta is calibrated on even-numbered
problems (cheapest theta whose pass@1 there is no lower than the largest model's alone) and
the cascade is reported on the odd-numbered ones: pass@1, compute cost (FLOPs, 2 x params x
prompt+completion tokens, against always using the largest model) and who answered. The whole
cost curve over theta is printed for both halves. Prints JSON.

Usage: python benchmarks/cascade.py --models qwen2.5-coder-0.5b qwen2.5-coder-1.5b
       --evals results/humaneval-0.5b.json results/humaneval-1.5b.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mfmaccel.data.code import load_humaneval
from mfmaccel.decode.cascade import (
    NEVER,
    calibrate_theta,
    cascade_point,
    code_answers,
    cost_curve,
    split_tasks,
)
from mfmaccel.models import load_model


def model_answers(name: str, record_path: Path, problems):
    record = json.loads(record_path.read_text())
    rows = {row["task_id"]: row for row in record["per_problem"]}
    candidates = {task: row["completions"] for task, row in rows.items()}
    passed = {task: [s == "passed" for s in row["statuses"]] for task, row in rows.items()}
    chosen = [p for p in problems if p.task_id in rows]
    return code_answers(load_model(name), chosen, candidates, passed), [p.task_id for p in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--evals", nargs="+", type=Path, required=True)
    args = parser.parse_args()
    if len(args.models) != len(args.evals):
        raise SystemExit("give one --evals record per model, in the same order")
    problems = load_humaneval()
    chain, task_sets = [], []
    for name, path in zip(args.models, args.evals, strict=True):
        answers, tasks = model_answers(name, path, problems)
        chain.append(answers)
        task_sets.append(set(tasks))
    common = sorted(set.intersection(*task_sets))
    calibration, held_out = split_tasks(common)
    theta = calibrate_theta(chain, calibration)
    chosen = cascade_point(chain, theta, held_out)
    largest = cascade_point(chain, NEVER, held_out)
    result = {
        "models": args.models, "problems": len(common),
        "calibration_problems": len(calibration), "held_out_problems": len(held_out),
        "self_tested_problems": sum(a.self_total > 0 for a in chain[0].answers.values()),
        "pass_at_1_alone": {m.model: sum(m.answers[t].passed for t in held_out) / len(held_out)
                            for m in chain},
        "theta": theta,
        "held_out": chosen.to_dict(),
        "cost_reduction": 1 - chosen.cost_fraction,
        "pass_at_1_vs_largest": chosen.pass_rate - largest.pass_rate,
        "curve_held_out": [p.to_dict() for p in cost_curve(chain, held_out)],
        "curve_calibration": [p.to_dict() for p in cost_curve(chain, calibration)],
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

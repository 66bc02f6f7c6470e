"""A small-to-large cascade: each query goes to the smallest model first; a self-test gives
its answer a confidence, and the answer stands if that reaches theta, else the query moves on
to the next model. The last model's answer always stands.

- code (the published scheme, model cascading for code): the model's k candidate solutions
  run in the sandbox against test lines for the problem, confidence = the fraction the best
  candidate passes; the tests are the prompt's own examples (`decode.selftest`) plus, if asked,
  l lines the model writes itself (`decode.testgen`); a problem without any escalates;
- closed-question VQA: confidence = the margin between the two most likely answers (softmax
  over the candidates' log-likelihoods).

Every model answers every query once (`code_answers`, `vqa_answers`), so a cascade at any theta
is a replay of those answers: calibrating theta on one split and reporting on another costs no
extra inference. Compute cost is FLOPs, 2 x the weights a token is multiplied through
(`LoadedModel.multiply_weights`: not a looked-up token embedding) x tokens processed, for every
model a query visits, and, where each answer was timed on its own (VQA), wall time. For code,
the tokens processed are the prompt's and every token each candidate generated; a record that
does not keep the generated counts leaves only the extracted completions to count, which
misses what extraction dropped (prose, fences, test code), so the report says which it counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mfmaccel.data.code import CodeProblem
from mfmaccel.decode.selftest import example_tests, self_test
from mfmaccel.decode.testgen import WrittenTests, generate_tests
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.codegen import code_prompt_ids
from mfmaccel.evaluate.humaneval import checked_token_counts
from mfmaccel.models.record import LoadedModel
from mfmaccel.records import Record

NEVER = 1.01  # a theta no self-test reaches: always escalate
THETAS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, NEVER)
HALVES = "even-numbered queries (reported on the odd ones)"
SEPARATE_SPLIT = "a separate validation split"


@dataclass
class Answer:
    """One model's answer to one query: whether it is right (hidden tests, ground truth),
    how confident the self-test is (None: no self-test possible, so escalate), what it cost."""

    correct: bool
    confidence: float | None
    flops: float
    seconds: float = 0.0  # 0 where answers were not timed one by one (batched generation)
    detail: str = ""  # the completion or answer text

    def accepted(self, theta: float) -> bool:
        return self.confidence is not None and self.confidence >= theta


GENERATED = "generated tokens"
EXTRACTED = ("extracted completions (the record keeps no generated token counts: a lower "
             "bound on what generation cost)")


@dataclass
class ModelAnswers:
    model: str
    answers: dict[str, Answer]
    tokens_counted: str = ""  # code: GENERATED or EXTRACTED; "" for VQA (prompt only)


@dataclass
class CascadePoint(Record):
    theta: float | None  # None: the oracle bound (`oracle_point`)
    pass_rate: float
    flops_per_problem: float
    cost_fraction: float  # of always using the largest model
    time_fraction: float | None = None  # the same in wall time, where answers were timed
    answered_by: dict[str, float] = field(default_factory=dict)  # model -> share of problems
    problems: int = 0


def code_answers(model: LoadedModel, problems: Sequence[CodeProblem],
                 candidates: dict[str, list[str]], hidden_passed: dict[str, list[bool]],
                 *, workers: int = 2, written: dict[str, WrittenTests] | None = None,
                 generated_tokens: dict[str, list[int]] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> ModelAnswers:
    """Self-test each problem's candidates and pick the best; count each answer's FLOPs.

    `candidates[task_id]` are the model's completions (e.g. from `mfmaccel eval --task
    humaneval`, whose JSON keeps them) and `hidden_passed` whether each passed the real tests.
    `generated_tokens[task_id]` are how many tokens generating each candidate took; without
    them the extracted completions are counted (`EXTRACTED`). `written` adds the test lines
    the model wrote for each problem (`decode.testgen`) to the prompt's examples, and their
    cost to the answer's. `progress(done, total)` counts problems self-tested.
    """
    written = written or {}
    missing = [p.task_id for p in problems if p.task_id not in candidates]
    if missing:
        raise UserInputError(f"no completions from {model.name} for {missing[0]}; evaluate "
                             "it on the same problems first")
    counts = _generated_counts(problems, candidates, generated_tokens)
    flops_per_token = 2.0 * model.multiply_weights  # walks every module: once per model
    answers = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for problem, answer in zip(problems, pool.map(lambda p: _best_answer(
                model, p, candidates[p.task_id], hidden_passed[p.task_id],
                written=written.get(p.task_id, WrittenTests()), flops_per_token=flops_per_token,
                generated=counts.get(p.task_id)), problems), strict=True):
            answers[problem.task_id] = answer
            if progress:
                progress(len(answers), len(problems))
    return ModelAnswers(model.name, answers, GENERATED if counts else EXTRACTED)


def _generated_counts(problems: Sequence[CodeProblem], candidates: dict[str, list[str]],
                      generated_tokens: dict[str, list[int]] | None) -> dict[str, list[int]]:
    """Generated token counts for every problem's every candidate, or {} where any is
    missing (one rule for the whole chain link, so its cost is counted one way)."""
    if not generated_tokens:
        return {}
    if any(p.task_id not in generated_tokens for p in problems):
        return {}
    return {p.task_id: checked_token_counts(
                p.task_id, generated_tokens[p.task_id], len(candidates[p.task_id]),
                fix="re-run `mfmaccel eval --task humaneval`")
            for p in problems}


def _best_answer(model: LoadedModel, problem: CodeProblem, completions: list[str],
                 passed: list[bool], *, written: WrittenTests, flops_per_token: float,
                 generated: list[int] | None = None) -> Answer:
    tests = list(dict.fromkeys(example_tests(problem) + written.lines))
    results = [self_test(problem, c, tests) for c in completions]
    best = max(range(len(completions)), key=lambda i: results[i].passed)  # first on ties
    prompt_tokens = code_prompt_ids(model, problem).shape[1]
    if generated is None:
        generated = [len(model.tokenizer(c).input_ids) for c in completions]
    tokens = prompt_tokens + sum(generated) + written.tokens
    confidence = results[best].fraction if tests else None
    return Answer(passed[best], confidence, flops_per_token * tokens, detail=completions[best])


def vqa_answers(model: LoadedModel, samples: Sequence, progress=None) -> ModelAnswers:
    """Each closed question answered by ranking its candidates; confidence = the margin of
    the top answer's probability over the runner-up's. Query ids are "vqa/<index>"."""
    import time

    import torch

    from mfmaccel.evaluate.vqa import answer_scores, normalize_answer, prompt_inputs

    answers, flops_per_token = {}, 2.0 * model.multiply_weights
    for index, sample in enumerate(samples):
        start = time.perf_counter()
        inputs = prompt_inputs(model, sample)
        scores = torch.tensor(answer_scores(model, sample, inputs))
        seconds = time.perf_counter() - start
        probs = scores.softmax(-1).sort(descending=True).values
        margin = float(probs[0] - probs[1]) if len(probs) > 1 else 1.0
        choice = sample.answer_set[int(scores.argmax())]
        tokens = inputs["input_ids"].shape[1]
        answers[f"vqa/{index}"] = Answer(
            normalize_answer(choice) == normalize_answer(sample.answer), margin,
            flops_per_token * tokens, seconds, choice)
        if progress:
            progress(index + 1, len(samples))
    return ModelAnswers(model.name, answers)


def cascade_point(chain: Sequence[ModelAnswers], theta: float,
                  task_ids: Sequence[str]) -> CascadePoint:
    """Replay the cascade at `theta` over `task_ids`."""
    if len(chain) < 2:
        raise UserInputError("a cascade needs at least two models, smallest first")
    last = len(chain) - 1
    stops = {task: next((i for i, stage in enumerate(chain[:-1])
                         if stage.answers[task].accepted(theta)), last) for task in task_ids}
    return _replay(chain, theta, task_ids, stops)


def oracle_point(chain: Sequence[ModelAnswers], task_ids: Sequence[str]) -> CascadePoint:
    """The cheapest the cascade could be on `task_ids` with these answers at a pass rate no
    lower than the largest model's alone, if its self-test knew which answers are right. Each
    query stops at the first model that gets it right (at the first model if none does); then,
    while quality allows, queries that only a later model gets right stop at the first model
    after all, those whose escalation costs most first. No self-test can do better, so this
    bounds what any theta or test can reach (theta: None)."""
    first_right = {task: next((i for i, stage in enumerate(chain) if stage.answers[task].correct),
                              None) for task in task_ids}
    stops = {task: stop or 0 for task, stop in first_right.items()}
    slack = sum(stop is not None for stop in first_right.values()) - sum(
        chain[-1].answers[task].correct for task in task_ids)
    saving = {task: sum(stage.answers[task].flops for stage in chain[1:stops[task] + 1])
              for task in task_ids}
    for task in sorted((t for t in task_ids if stops[t] > 0), key=lambda t: -saving[t])[:slack]:
        stops[task] = 0
    return _replay(chain, None, task_ids, stops)


def _replay(chain: Sequence[ModelAnswers], theta: float | None, task_ids: Sequence[str],
            stops: dict[str, int]) -> CascadePoint:
    """Quality and cost when each task stops at stage `stops[task]` (earlier stages paid)."""
    solved, flops, largest, seconds, largest_seconds = 0, 0.0, 0.0, 0.0, 0.0
    answered = dict.fromkeys((m.model for m in chain), 0)
    for task in task_ids:
        largest += chain[-1].answers[task].flops
        largest_seconds += chain[-1].answers[task].seconds
        for stage in chain[:stops[task] + 1]:
            flops += stage.answers[task].flops
            seconds += stage.answers[task].seconds
        final = chain[stops[task]]
        solved += final.answers[task].correct
        answered[final.model] += 1
    n = len(task_ids)
    return CascadePoint(theta, solved / n, flops / n, flops / largest,
                        seconds / largest_seconds if largest_seconds else None,
                        {k: v / n for k, v in answered.items()}, n)


def cost_curve(chain: Sequence[ModelAnswers], task_ids: Sequence[str],
               thetas: Sequence[float] = THETAS) -> list[CascadePoint]:
    return [cascade_point(chain, theta, task_ids) for theta in thetas]


def calibrate_theta(chain: Sequence[ModelAnswers], task_ids: Sequence[str],
                    thetas: Sequence[float] = THETAS) -> float:
    """The cheapest theta whose pass rate on `task_ids` is no lower than the largest model's
    alone (NEVER, i.e. always escalating, meets that by construction)."""
    target = cascade_point(chain, NEVER, task_ids).pass_rate
    meeting = [p for p in cost_curve(chain, task_ids, thetas) if p.pass_rate >= target]
    return min(meeting, key=lambda p: (p.flops_per_problem, -p.pass_rate)).theta


def split_tasks(task_ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """A fixed split in task order: even positions calibrate theta, odd ones report."""
    ordered = sorted(task_ids, key=_task_order)
    return ordered[0::2], ordered[1::2]


def _task_order(task_id: str) -> tuple[int, str]:
    tail = task_id.rsplit("/", 1)[-1]
    return (int(tail), "") if tail.isdigit() else (1 << 30, task_id)


def answers_from_record(model: LoadedModel, problems: Sequence[CodeProblem],
                        record: dict, *, test_lines: int = 0, last: bool = False,
                        progress: Callable[[int, int], None] | None = None) -> ModelAnswers:
    """`code_answers` for the problems a HumanEval record (`mfmaccel eval --task humaneval`
    JSON, or `HumanEvalResult.to_dict()`) answered, with its completions and verdicts; with
    `test_lines`, the model also writes that many tests per problem for its self-test, unless
    it is the `last` of the chain: its answer always stands, and the tests' cost would only
    inflate the baseline the cascade is measured against."""
    rows = {row["task_id"]: row for row in record.get("per_problem", [])}
    if not rows or "completions" not in next(iter(rows.values())):
        raise UserInputError("the HumanEval record holds no completions; re-run `mfmaccel eval "
                             "--task humaneval` to make one that does")
    chosen = [p for p in problems if p.task_id in rows]
    candidates = {t: row["completions"] for t, row in rows.items()}
    passed = {t: [s == "passed" for s in row["statuses"]] for t, row in rows.items()}
    generated = {t: row["generated_tokens"] for t, row in rows.items()
                 if row.get("generated_tokens") is not None}
    written = generate_tests(model, chosen, count=test_lines) if test_lines and not last else None
    return code_answers(model, chosen, candidates, passed, written=written,
                        generated_tokens=generated, progress=progress)


@dataclass
class CascadeReport(Record):
    """A cascade calibrated on some queries and reported on others it never saw."""

    models: list[str]
    problems: int  # queries every model of the reported chain answered
    calibration_problems: int
    theta: float
    held_out: CascadePoint
    alone: dict[str, float]  # pass@1 of each model alone on the held-out queries
    cost_reduction: float  # 1 - cost of the cascade / cost of the largest alone
    pass_at_1_vs_largest: float
    self_tested_share: float  # queries the smallest model could self-test at all
    oracle_held_out: CascadePoint | None = None  # the bound no self-test can beat
    curve_held_out: list[CascadePoint] = field(default_factory=list)
    curve_calibration: list[CascadePoint] = field(default_factory=list)
    calibrated_on: str = HALVES
    tokens_counted: dict[str, str] = field(default_factory=dict)  # model -> what FLOPs count
    questions: str = ""  # what was answered: a benchmark's name or the user's data path


def calibrated_cascade(chain: Sequence[ModelAnswers],
                       calibration: Sequence[ModelAnswers] | None = None) -> CascadeReport:
    """Calibrate theta and report the cascade on queries calibration did not see.

    With `calibration` (the same models' answers on a validation split) theta comes from all of
    those and the report covers every query of `chain`; without, the even-numbered queries of
    `chain` calibrate and the odd-numbered ones are reported.
    """
    common = _answered_by_all(chain)
    if calibration is None:
        calibration_chain, (calibration_ids, held_out) = chain, split_tasks(common)
    else:
        if [m.model for m in calibration] != [m.model for m in chain]:
            raise UserInputError("calibrate the cascade with the same models, in the same order")
        calibration_chain, held_out = calibration, common
        calibration_ids = _answered_by_all(calibration)
    theta = calibrate_theta(calibration_chain, calibration_ids)
    point = cascade_point(chain, theta, held_out)
    largest = cascade_point(chain, NEVER, held_out)
    first = chain[0].answers
    return CascadeReport(
        models=[m.model for m in chain], problems=len(common),
        calibration_problems=len(calibration_ids), theta=theta, held_out=point,
        alone={m.model: sum(m.answers[t].correct for t in held_out) / len(held_out)
               for m in chain},
        cost_reduction=1 - point.cost_fraction,
        pass_at_1_vs_largest=point.pass_rate - largest.pass_rate,
        self_tested_share=sum(first[t].confidence is not None for t in common) / len(common),
        oracle_held_out=oracle_point(chain, held_out),
        curve_held_out=cost_curve(chain, held_out),
        curve_calibration=cost_curve(calibration_chain, calibration_ids),
        calibrated_on=HALVES if calibration is None else SEPARATE_SPLIT,
        tokens_counted={m.model: m.tokens_counted for m in chain if m.tokens_counted},
    )


def _answered_by_all(chain: Sequence[ModelAnswers]) -> list[str]:
    common = sorted(set.intersection(*(set(m.answers) for m in chain)))
    if len(common) < 4:
        raise UserInputError(f"only {len(common)} problems answered by every model; a "
                             "calibrated cascade needs at least 4")
    return common

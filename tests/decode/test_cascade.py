"""Self-tests from a prompt's examples, and the code cascade replayed at any threshold."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from mfmaccel.data.code import CodeProblem, load_humaneval
from mfmaccel.decode.cascade import (
    NEVER,
    THETAS,
    Answer,
    ModelAnswers,
    calibrate_theta,
    calibrated_cascade,
    cascade_point,
    code_answers,
    cost_curve,
    oracle_point,
    split_tasks,
)
from mfmaccel.decode.selftest import example_tests, self_test
from mfmaccel.decode.testgen import WrittenTests, assert_lines, generate_tests
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.sandbox.run import SandboxLimits
from mfmaccel.models import load_model

PROBLEM = CodeProblem(
    task_id="Toy/0",
    prompt=('def double(x):\n    """Twice x.\n    >>> double(2)\n    4\n'
            "    double(5) => 10\n    double(0) == 0\n    double(1) -> true  # no: 2\n"
            '    """\n'),
    canonical_solution="    return 2 * x\n",
    test="def check(f):\n    assert f(3) == 6\n",
    entry_point="double",
)


def test_examples_become_asserts_in_every_common_format() -> None:
    assert example_tests(PROBLEM) == [
        "assert (double(2)) == (4)", "assert (double(5)) == (10)", "assert (double(0)) == (0)",
        "assert (double(1)) == (True)"]


def test_self_test_counts_the_examples_a_candidate_passes() -> None:
    tests = example_tests(PROBLEM)
    assert self_test(PROBLEM, PROBLEM.canonical_solution, tests).passed == 3  # 'true' is wrong
    assert self_test(PROBLEM, "    return x + x if x else 1\n", tests).passed == 2
    hang = self_test(PROBLEM, "    while True:\n        pass\n", tests,
                     SandboxLimits(wall_seconds=2, cpu_seconds=2))
    assert (hang.passed, hang.total) == (0, 4)
    assert self_test(PROBLEM, "    return 2 * x\n", []).fraction == 0.0


def test_humaneval_examples_are_found_and_canonical_solutions_pass_them() -> None:
    problems = load_humaneval()
    tests = {p.task_id: example_tests(p) for p in problems}
    with_tests = [p for p in problems if tests[p.task_id]]
    assert len(with_tests) >= 130  # of 164: most prompts carry examples
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(
            lambda p: self_test(p, p.canonical_solution, tests[p.task_id]), with_tests))
    all_pass = sum(r.passed == r.total for r in results)
    assert all_pass / len(with_tests) >= 0.9


def _answers(name: str, params: int, table: dict[str, tuple[bool, int, int]]) -> ModelAnswers:
    """(passed, self-tests passed, self-tests) per task; no self-tests: no confidence."""
    return ModelAnswers(name, {
        task: Answer(passed, got / total if total else None, 2.0 * params * 100)
        for task, (passed, got, total) in table.items()})


SMALL = _answers("small", 1, {"T/0": (True, 2, 2), "T/1": (False, 1, 2), "T/2": (False, 2, 2),
                              "T/3": (True, 0, 0)})
LARGE = _answers("large", 3, {"T/0": (True, 2, 2), "T/1": (True, 2, 2), "T/2": (True, 2, 2),
                              "T/3": (True, 1, 1)})


def test_cascade_replay_counts_quality_cost_and_who_answered() -> None:
    tasks = ["T/0", "T/1", "T/2", "T/3"]
    strict = cascade_point([SMALL, LARGE], 1.0, tasks)
    assert strict.pass_rate == 0.75  # T/2's confident wrong answer stands
    assert strict.answered_by == {"small": 0.5, "large": 0.5}
    assert strict.flops_per_problem == pytest.approx((4 * 200 + 2 * 600) / 4)
    assert strict.cost_fraction == pytest.approx((4 * 200 + 2 * 600) / (4 * 600))
    assert strict.time_fraction is None  # these answers were not timed one by one
    never = cascade_point([SMALL, LARGE], NEVER, tasks)
    assert never.pass_rate == 1.0 and never.cost_fraction == pytest.approx(4 / 3)
    lenient = cascade_point([SMALL, LARGE], 0.0, tasks)
    assert lenient.answered_by["small"] == 0.75  # T/3 has no tests: it escalates
    assert [p.theta for p in cost_curve([SMALL, LARGE], tasks)][-1] == NEVER


def test_calibration_keeps_the_large_models_quality() -> None:
    assert calibrate_theta([SMALL, LARGE], ["T/0", "T/3"]) == 0.0  # small is right on T/0
    assert calibrate_theta([SMALL, LARGE], ["T/0", "T/2"]) == NEVER
    with pytest.raises(UserInputError, match="two models"):
        cascade_point([LARGE], 0.5, ["T/0"])


def test_the_oracle_bound_keeps_quality_at_the_least_cost() -> None:
    tasks = ["T/0", "T/1", "T/2", "T/3"]
    oracle = oracle_point([SMALL, LARGE], tasks)
    assert oracle.theta is None and oracle.pass_rate == 1.0  # the large model's alone
    assert oracle.answered_by == {"small": 0.5, "large": 0.5}  # T/1, T/2: only large is right
    assert oracle.cost_fraction == pytest.approx((4 * 200 + 2 * 600) / (4 * 600))
    # a query only the small model gets right buys one where only the large one does
    small = _answers("small", 1, {"A": (True, 0, 0), "B": (False, 0, 0), "C": (False, 0, 0)})
    large = _answers("large", 3, {"A": (False, 0, 0), "B": (True, 0, 0), "C": (True, 0, 0)})
    bought = oracle_point([small, large], ["A", "B", "C"])
    assert bought.pass_rate == pytest.approx(2 / 3) and bought.answered_by["small"] == 2 / 3
    for theta in THETAS:  # no threshold does better at that quality
        point = cascade_point([SMALL, LARGE], theta, tasks)
        assert point.pass_rate < 1.0 or point.cost_fraction >= oracle.cost_fraction


def test_the_oracle_bound_extends_to_longer_chains() -> None:
    # A: all right; B: only the middle model; C: only the largest; D: none
    small = _answers("small", 1, {"A": (True, 0, 0), "B": (False, 0, 0), "C": (False, 0, 0),
                                  "D": (False, 0, 0)})
    middle = _answers("middle", 2, {"A": (True, 0, 0), "B": (True, 0, 0), "C": (False, 0, 0),
                                    "D": (False, 0, 0)})
    large = _answers("large", 3, {"A": (True, 0, 0), "B": (False, 0, 0), "C": (True, 0, 0),
                                  "D": (False, 0, 0)})
    oracle = oracle_point([small, middle, large], ["A", "B", "C", "D"])
    # B, which only the middle model gets right, buys C, the dearer escalation, at no loss
    assert oracle.pass_rate == 0.5 and oracle.answered_by == {"small": 0.75, "middle": 0.25,
                                                              "large": 0.0}
    assert oracle.cost_fraction == pytest.approx((3 * 200 + 600) / (4 * 600))


def test_a_separate_calibration_split_sets_theta_for_every_reported_query() -> None:
    # on these calibration queries only a theta above 0.5 keeps the large model's quality
    calibration = [_answers("small", 1, {"V/0": (True, 2, 2), "V/1": (False, 1, 2),
                                         "V/2": (True, 1, 1), "V/3": (False, 1, 2)}),
                   _answers("large", 3, {f"V/{i}": (True, 1, 1) for i in range(4)})]
    report = calibrated_cascade([SMALL, LARGE], calibration)
    assert report.theta == 0.75 and report.calibration_problems == 4
    assert report.problems == 4 and report.held_out.problems == 4  # every test query reported
    assert report.held_out == cascade_point([SMALL, LARGE], 0.75, ["T/0", "T/1", "T/2", "T/3"])
    assert report.calibrated_on != calibrated_cascade([SMALL, LARGE]).calibrated_on
    assert calibrated_cascade([SMALL, LARGE]).held_out.problems == 2  # the odd half
    with pytest.raises(UserInputError, match="same models"):
        calibrated_cascade([SMALL, LARGE], calibration[::-1])


def test_split_is_fixed_and_disjoint() -> None:
    tasks = [f"HumanEval/{i}" for i in (10, 2, 1, 0)]
    assert split_tasks(tasks) == (["HumanEval/0", "HumanEval/2"], ["HumanEval/1",
                                                                   "HumanEval/10"])


def test_code_answers_pick_the_candidate_that_passes_most_examples() -> None:
    model = load_model("tiny-llama")
    answers = code_answers(model, [PROBLEM], {"Toy/0": ["    return 0\n", "    return 2 * x\n"]},
                           {"Toy/0": [False, True]})
    answer = answers.answers["Toy/0"]
    assert answer.correct and answer.confidence == 0.75 and answer.detail == "    return 2 * x\n"
    assert answer.flops > 2.0 * model.multiply_weights * 10  # prompt and completion tokens
    with pytest.raises(UserInputError, match="no completions"):
        code_answers(model, [PROBLEM], {}, {})


def test_vqa_answers_carry_a_margin_and_replay_in_a_cascade() -> None:
    from mfmaccel.data.medvqa import load_medvqa
    from mfmaccel.decode.cascade import vqa_answers

    samples = load_medvqa("test", seed=0)[:6]
    small = vqa_answers(load_model("tiny-llava"), samples)
    large = vqa_answers(load_model("tiny-llava", seed=1), samples)
    for answer in small.answers.values():
        assert 0 <= answer.confidence <= 1 and answer.seconds > 0 and answer.detail
    tasks = list(small.answers)
    point = cascade_point([small, large], 0.0, tasks)  # every margin >= 0: small answers all
    assert point.pass_rate == sum(small.answers[t].correct for t in tasks) / len(tasks)
    assert point.time_fraction is not None and point.time_fraction > 0
    never = cascade_point([small, large], NEVER, tasks)
    assert never.pass_rate == sum(large.answers[t].correct for t in tasks) / len(tasks)


def test_written_tests_join_the_examples_and_their_cost_counts() -> None:
    model = load_model("tiny-llama")
    candidates, passed = {"Toy/0": ["    return 2 * x\n"]}, {"Toy/0": [True]}
    plain = code_answers(model, [PROBLEM], candidates, passed).answers["Toy/0"]
    written = {"Toy/0": WrittenTests(["assert double(7) == 14", "assert double(-1) == 3"], 50)}
    both = code_answers(model, [PROBLEM], candidates, passed, written=written).answers["Toy/0"]
    assert plain.confidence == 0.75  # 3 of the 4 prompt examples (one of them is wrong)
    assert both.confidence == 4 / 6  # + one right and one wrong written test
    assert both.flops == plain.flops + 2.0 * model.multiply_weights * 50


def test_assert_lines_keep_valid_calls_of_the_entry_point() -> None:
    reply = ("Here you go:\n```python\nassert double(2) == 4\nassert double(2) == 4\n"
             "assert other(1) == 2\nassert double(3 == 6\nprint(double(1))\n"
             "    assert double(0) == 0\n```\nassert double(9) == 18\n")
    assert assert_lines(reply, "double") == ["assert double(2) == 4", "assert double(0) == 0"]
    assert assert_lines("assert double(1) == 2", "double") == ["assert double(1) == 2"]


def test_generated_tests_cover_every_problem_within_the_count() -> None:
    problems = load_humaneval()[:2]
    written = generate_tests(load_model("tiny-llama"), problems, count=3, max_new_tokens=8)
    assert set(written) == {p.task_id for p in problems}
    assert all(len(t.lines) <= 3 and t.tokens > 8 for t in written.values())
    with pytest.raises(UserInputError, match="at least 1"):
        generate_tests(load_model("tiny-llama"), problems, count=0)

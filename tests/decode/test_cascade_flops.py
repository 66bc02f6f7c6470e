"""The code cascade's FLOPs count what each model generated, not what extraction kept."""

from __future__ import annotations

import pytest

from mfmaccel.data.code import humaneval_subset, load_humaneval
from mfmaccel.decode.cascade import (
    EXTRACTED,
    GENERATED,
    ModelAnswers,
    answers_from_record,
    calibrated_cascade,
    code_answers,
)
from mfmaccel.decode.testgen import RAW, REQUEST, generate_tests
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.codegen import block_closed, chat_or_raw_ids, code_prompt_ids
from mfmaccel.evaluate.run import TaskData, TaskOptions, measure_task
from mfmaccel.models import load_model
from mfmaccel.runtime.engine import eos_ids, generate_batch
from tests.decode.test_cascade import PROBLEM

COMPLETION = "    return 2 * x\n"


@pytest.fixture(scope="module")
def model():
    return load_model("tiny-llama")


def test_generated_tokens_are_what_the_answer_costs(model) -> None:
    per_token = 2.0 * model.multiply_weights
    prompt = code_prompt_ids(model, PROBLEM).shape[1]
    candidates, passed = {"Toy/0": [COMPLETION, "    return 0\n"]}, {"Toy/0": [True, False]}
    counted = code_answers(model, [PROBLEM], candidates, passed,
                           generated_tokens={"Toy/0": [120, 7]})
    assert counted.tokens_counted == GENERATED
    assert counted.answers["Toy/0"].flops == per_token * (prompt + 120 + 7)
    # the generated reply held prose and a fence around the code: far more than extracted
    extracted = code_answers(model, [PROBLEM], candidates, passed)
    assert extracted.tokens_counted == EXTRACTED
    kept = sum(len(model.tokenizer(c).input_ids) for c in candidates["Toy/0"])
    assert extracted.answers["Toy/0"].flops == per_token * (prompt + kept)
    assert counted.answers["Toy/0"].flops > extracted.answers["Toy/0"].flops


def test_counts_that_do_not_match_the_completions_are_refused(model) -> None:
    candidates, passed = {"Toy/0": [COMPLETION]}, {"Toy/0": [True]}
    for bad in ([3, 4], [-1], ["12"]):
        with pytest.raises(UserInputError, match="generated_tokens"):
            code_answers(model, [PROBLEM], candidates, passed, generated_tokens={"Toy/0": bad})


def _row(generated: list[int] | None) -> dict:
    row = {"task_id": "Toy/0", "n": 1, "n_correct": 1, "statuses": ["passed"],
           "first_failure": "", "completions": [COMPLETION]}
    if generated is not None:
        row["generated_tokens"] = generated
    return row


def test_a_record_with_generated_counts_is_counted_by_them(model) -> None:
    with_counts = answers_from_record(model, [PROBLEM], {"per_problem": [_row([64])]})
    without = answers_from_record(model, [PROBLEM], {"per_problem": [_row(None)]})
    assert with_counts.tokens_counted == GENERATED and without.tokens_counted == EXTRACTED
    prompt = code_prompt_ids(model, PROBLEM).shape[1]
    assert with_counts.answers["Toy/0"].flops == 2.0 * model.multiply_weights * (prompt + 64)


def test_the_report_says_what_each_models_flops_counted() -> None:
    from mfmaccel.decode.cascade import Answer

    def answers(name: str, how: str) -> ModelAnswers:
        return ModelAnswers(name, {f"T/{i}": Answer(True, 1.0, 100.0) for i in range(4)}, how)

    report = calibrated_cascade([answers("small", GENERATED), answers("large", EXTRACTED)])
    assert report.tokens_counted == {"small": GENERATED, "large": EXTRACTED}
    assert "tokens_counted" in report.to_dict()


def test_an_eval_record_carries_the_engines_counts_into_the_cascade(model) -> None:
    """`mfmaccel eval --task humaneval`'s record -> the cascade's FLOPs: prompt plus every
    token generated (tiny-llama's random replies run to the 24-token limit)."""
    problems = humaneval_subset(load_humaneval(), 2)
    record = measure_task(model, TaskData("humaneval", problems, "humaneval"),
                          TaskOptions(max_new_tokens=24)).to_dict()
    assert all(row["generated_tokens"] == [24] for row in record["per_problem"])
    answers = answers_from_record(model, problems, record)
    assert answers.tokens_counted == GENERATED
    for problem in problems:
        prompt = code_prompt_ids(model, problem).shape[1]
        assert answers.answers[problem.task_id].flops == 2.0 * model.multiply_weights * (
            prompt + 24)


def test_written_tests_cost_the_prompt_and_the_tokens_generated(model) -> None:
    problems = humaneval_subset(load_humaneval(), 2)
    written = generate_tests(model, problems, count=3, max_new_tokens=10)
    for problem in problems:
        prompt = chat_or_raw_ids(model, REQUEST.format(
            prompt=problem.prompt, count=3, entry=problem.entry_point), RAW.format(
            prompt=problem.prompt, count=3, entry=problem.entry_point))[0].tolist()
        reply = generate_batch(model.module, [prompt], max_new_tokens=10, pad_token_id=0,
                               eos_token_ids=eos_ids(model.module, model.tokenizer),
                               row_done=block_closed(model.tokenizer))[0]
        assert written[problem.task_id].tokens == len(prompt) + len(reply)

"""The loop with a scripted generator: a wrong module, then a right one after feedback."""

from __future__ import annotations

import pytest

from mfmaccel.errors import UserInputError
from mfmaccel.hw.llm_design.feedback import NO_MODULE
from mfmaccel.hw.llm_design.generators import GeneratorError, Reply
from mfmaccel.hw.llm_design.loop import (
    GENERATOR_ERROR,
    Candidate,
    LoopSettings,
    design,
    design_suite,
    rank,
    summarize,
)
from mfmaccel.hw.llm_design.run import summary_line
from tests.hw.llm_design.conftest import needs_icarus, needs_verilator, needs_yosys

RIGHT = ("```verilog\nmodule TopModule(input [31:0] in, output [31:0] out);\n"
         "  assign out = {in[7:0], in[15:8], in[23:16], in[31:24]};\nendmodule\n```")
WRONG = ("```verilog\nmodule TopModule(input [31:0] in, output [31:0] out);\n"
         "  assign out = in;\nendmodule\n```")
BROKEN = "```verilog\nmodule TopModule(input [31:0] in, output [31:0] out);\n  assign out =\n```"


class Scripted:
    """Answers from a list, one per call, recording each conversation it was shown."""

    name = "scripted"

    def __init__(self, *answers: str) -> None:
        self.answers, self.conversations = list(answers), []

    def check(self) -> None:
        pass

    def replies(self, messages, *, count, temperature, max_new_tokens, seed):
        self.conversations.append(messages)
        out = []
        for _ in range(count):
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            out.append(Reply(answer, len(answer.split()), 0.01))
        return out


@needs_icarus
@needs_verilator
@needs_yosys
def test_wrong_then_right_passes_in_round_two_with_feedback(vector2):
    generator = Scripted(WRONG, RIGHT)
    result = design(vector2, generator, rounds=3)
    assert result.passed and not result.pass_at_1 and result.first_pass_round == 2
    assert result.rounds_run == 2 and len(generator.conversations) == 2
    assert [c.status for c in result.candidates] == ["mismatch", "pass"]
    second = generator.conversations[1]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[2]["content"] == WRONG
    assert "differ from the reference" in second[3]["content"] and "out:" in second[3]["content"]
    assert result.cells == 0 and result.lint == "clean"  # a byte swap is wires only
    assert result.security.secure and result.security.equivalence.proof == "combinational"
    suite = summarize([result], "scripted", LoopSettings(rounds=3), skipped={}, seconds=1.0)
    assert suite.secure == 1 and "security-clean 1/1" in summary_line(suite)
    assert result.tokens == sum(len(a.split()) for a in (WRONG, RIGHT))


@needs_icarus
@needs_verilator
def test_a_fresh_revision_shows_the_feedback_without_the_answer(vector2):
    generator = Scripted(WRONG, BROKEN, RIGHT)
    result = design(vector2, generator, rounds=3, revise="fresh", synthesize_pass=False,
                    secure_pass=False)
    assert result.first_pass_round == 3
    for conversation in generator.conversations[1:]:
        assert [m["role"] for m in conversation] == ["system", "user"]
        assert "assign out" not in conversation[1]["content"]
    assert "differ from the reference" in generator.conversations[1][1]["content"]
    assert "does not compile" in generator.conversations[2][1]["content"]
    assert "differ from the reference" not in generator.conversations[2][1]["content"]


@needs_icarus
@needs_verilator
def test_zero_shot_pass_and_a_round_limit(vector2):
    assert design(vector2, Scripted(RIGHT), synthesize_pass=False,
                  secure_pass=False).pass_at_1
    failed = design(vector2, Scripted(WRONG, BROKEN), rounds=2, synthesize_pass=False,
                    secure_pass=False)
    assert not failed.passed and failed.first_pass_round is None and failed.rounds_run == 2
    assert failed.status == "compile_error" and failed.cells is None


@needs_icarus
@needs_verilator
def test_best_of_k_keeps_the_fewest_mismatches_and_stops_at_a_pass(vector2):
    generator = Scripted("no code here", BROKEN, WRONG, RIGHT, WRONG, WRONG)
    result = design(vector2, generator, rounds=3, candidates=3, temperature=0.8,
                    synthesize_pass=False, secure_pass=False)
    assert result.first_pass_round == 2 and result.rounds_run == 2
    assert [c.status for c in result.candidates[:3]] == [NO_MODULE, "compile_error", "mismatch"]
    assert generator.conversations[1][2]["content"] == WRONG  # the best of round 1 fed back


@needs_icarus
def test_no_module_and_generator_error_are_recorded_failures(vector2):
    quiet = design(vector2, Scripted("I don't know."), synthesize_pass=False,
                   secure_pass=False)
    assert not quiet.passed and quiet.status == NO_MODULE
    down = design(vector2, Scripted(GeneratorError("endpoint down")), rounds=3,
                  synthesize_pass=False, secure_pass=False)
    assert down.status == GENERATOR_ERROR and down.rounds_run == 1 and "down" in down.detail


@needs_icarus
@needs_verilator
def test_suite_skips_a_reference_that_fails_its_bench(excerpt_tasks):
    tasks = [excerpt_tasks["Prob004"], excerpt_tasks["Prob099"]]
    suite = design_suite(tasks, Scripted(RIGHT), LoopSettings(), synthesize_pass=False,
                         secure_pass=False)
    assert suite.problems == 1 and suite.pass_at_1 == 1.0 == suite.pass_with_feedback
    assert list(suite.skipped) == ["Prob099_m2014_q6c"]
    assert suite.first_pass_rounds == {"1": 1}
    assert suite.secure is None  # the pass was not security-checked


def test_rank_orders_pass_mismatch_ran_and_the_rest():
    def candidate(status, mismatches=None, samples=None):
        return Candidate(1, 0, status, "", mismatches, samples, "", 0, 0.0, "", "", "")

    ordered = [candidate("compile_error"), candidate("timeout"), candidate("mismatch", 50, 100),
               candidate("mismatch", 5, 100), candidate("pass")]
    assert sorted(ordered, key=rank) == ordered


@pytest.mark.parametrize("settings", [dict(rounds=0), dict(candidates=0),
                                      dict(candidates=2, temperature=0.0),
                                      dict(max_new_tokens=0), dict(revise="again")])
def test_settings_refused_in_one_line(settings):
    with pytest.raises(UserInputError):
        LoopSettings(**settings)


@needs_icarus
@needs_verilator
def test_greedy_first_asks_round_one_greedy_and_samples_the_rest(vector2):
    class Recording(Scripted):
        def replies(self, messages, *, count, temperature, max_new_tokens, seed):
            self.calls = [*getattr(self, "calls", []), (count, temperature, seed)]
            return super().replies(messages, count=count, temperature=temperature,
                                   max_new_tokens=max_new_tokens, seed=seed)

    generator = Recording(WRONG, BROKEN, WRONG, RIGHT)
    result = design(vector2, generator, rounds=2, candidates=2, temperature=0.7,
                    greedy_first=True, synthesize_pass=False, secure_pass=False)
    assert generator.calls == [(1, 0.0, 0), (1, 0.7, 1), (2, 0.7, 2)]
    assert not result.pass_at_1 and result.first_pass_round == 2
    with pytest.raises(UserInputError, match="temperature"):
        LoopSettings(greedy_first=True)

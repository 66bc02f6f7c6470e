"""The spec-to-RTL prompt, the feedback turn, the module read out of a reply, and feedback."""

from __future__ import annotations

import pytest

from mfmaccel.hw.llm_design.feedback import NO_MODULE, feedback_text, interface_notes
from mfmaccel.hw.llm_design.prompt import (
    EARLIER,
    FRESH,
    INSTRUCTION,
    SYSTEM,
    extract_module,
    first_messages,
    render_ids,
    revision_messages,
)
from mfmaccel.hw.llm_design.simulate import COMPILE_ERROR, MISMATCH, TIMEOUT, Verdict
from mfmaccel.hw.llm_design.tools import ERRORS, LintReport

WIRE = "module TopModule(input a, output b);\n  assign b = a;\nendmodule\n"


def test_fenced_module_is_taken_without_the_prose():
    reply = f"Here it is:\n```verilog\n{WIRE}```\nThis module wires a to b."
    assert extract_module(reply) == WIRE


def test_helpers_in_the_block_are_kept_and_other_blocks_skipped():
    helper = "module half(input a, output b);\n  assign b = ~a;\nendmodule\n"
    reply = (f"```python\nprint('module TopModule')\n```\n```systemverilog\n"
             f"// top\n{helper}{WIRE}```")
    assert extract_module(reply) == helper + WIRE


def test_bare_module_cut_and_truncated_replies_count_as_modules():
    assert extract_module(f"Sure.\n{WIRE}\nDone.") == WIRE
    cut = "```verilog\nmodule TopModule(input a, output b);\n  assign b ="
    assert extract_module(cut).startswith("module TopModule(") and "endmodule" not in \
        extract_module(cut)


def test_reply_without_top_module_is_none():
    assert extract_module("I cannot help with that.") is None
    assert extract_module("```verilog\nmodule top_module(input a);\nendmodule\n```") is None
    assert extract_module("```verilog\n// module TopModule\nmodule x; endmodule\n```") is None
    assert extract_module("<think>module TopModule(input a); endmodule</think>no code") is None


def test_prompt_is_the_spec_then_the_instruction(vector2):
    messages = first_messages(vector2)
    assert messages[0] == {"role": "system", "content": SYSTEM}
    assert messages[1]["content"].startswith("I would like you to implement a module named "
                                             "TopModule")
    assert messages[1]["content"].endswith(INSTRUCTION)
    later = revision_messages(messages, reply="old answer", feedback="it failed")
    assert [m["role"] for m in later] == ["system", "user", "assistant", "user"]
    assert later[2]["content"] == "old answer" and later[3]["content"].startswith("it failed")


def test_a_fresh_revision_hides_the_answer_and_keeps_only_the_latest_feedback(vector2):
    messages = first_messages(vector2)
    second = revision_messages(messages, reply="old answer", feedback="it failed", revise=FRESH)
    third = revision_messages(second, reply="newer answer", feedback="failed again",
                              revise=FRESH)
    for later, feedback in ((second, "it failed"), (third, "failed again")):
        assert [m["role"] for m in later] == ["system", "user"]
        text = later[1]["content"]
        assert text.startswith(vector2.spec.rstrip()) and text.endswith(INSTRUCTION)
        assert f"{EARLIER}\n{feedback}\n" in text and "answer" not in text.split(EARLIER)[1]
        assert text.count(INSTRUCTION) == 1 and text.count(EARLIER) == 1
    with pytest.raises(ValueError, match="unknown revision mode"):
        revision_messages(messages, reply="a", feedback="b", revise="nope")


def test_render_without_a_chat_template_names_each_turn():
    class Plain:
        chat_template = None

        def __call__(self, text):
            self.text = text
            return type("Encoded", (), {"input_ids": [1, 2, 3]})()

    tokenizer = Plain()
    assert render_ids(tokenizer, [{"role": "user", "content": "spec"}]) == [1, 2, 3]
    assert tokenizer.text == "User:\nspec\n\nAssistant:\n"


def test_feedback_names_errors_mismatches_and_reasons_briefly():
    compile_error = Verdict("t", COMPILE_ERROR, "e1", lines=[f"./candidate.sv:{i}: error: x"
                                                             for i in range(1, 9)])
    lint_report = LintReport(ERRORS, ["%Error: TopModule.sv:3: 'q' undeclared"], errors=1)
    text = feedback_text(compile_error, lint_report)
    assert "does not compile" in text and text.count("error: x") == 3
    assert "candidate.sv:1: error" in text and "'q' undeclared" in text
    mismatch = Verdict("t", MISMATCH, "", 12, 110, 110,
                       ["out: 12 mismatches, the first at time 55"])
    assert "12 of 110" in feedback_text(mismatch) and "first at time 55" in \
        feedback_text(mismatch)
    assert "in time" in feedback_text(Verdict("t", TIMEOUT, "the simulation passed"))
    assert "no Verilog module named TopModule" in feedback_text(Verdict("t", NO_MODULE))
    assert len(feedback_text(Verdict("t", COMPILE_ERROR, "x", lines=["e" * 190] * 3),
                             max_chars=100)) == 100


def test_feedback_names_ports_that_differ_from_the_spec(vector2):
    swapped = "module TopModule(input [31:0] in, input [7:0] out, input x);\nendmodule\n"
    assert interface_notes(swapped, vector2) == [
        "port 'x' is not in the specification",
        "port 'out' is declared input (8 bits); the specification has output (32 bits)"]
    text = feedback_text(Verdict("t", COMPILE_ERROR, "e", lines=["e"]), module=swapped,
                         task=vector2)
    assert text.startswith("The module's ports differ from the specification:\n- port 'x'")
    assert interface_notes("module TopModule(input a, output b;", vector2) == []

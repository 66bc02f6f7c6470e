"""The spec-to-RTL prompt, the feedback turn, and the module read back out of a reply.

Why VerilogEval's own wording: its v2 harness asks a chat model, under the system message below,
for the problem's prompt text as it ships ("I would like you to implement a module named
TopModule ..."), so our zero-shot pass@1 is comparable with the published figures. The one
change is the answer's wrapping: a ```verilog block instead of `[BEGIN]`/`[DONE]`, because code
models are tuned to fence their code and small ones follow that far more reliably. A later round
is the same conversation continued (spec, the previous answer, the tools' feedback), AutoChip's
shape, so the model sees what it wrote and what was wrong with it.
"""

from __future__ import annotations

import re

from mfmaccel.hw.llm_design.screen import TOP
from mfmaccel.hw.llm_design.task import DesignTask, strip_comments

SYSTEM = ("You are a Verilog RTL designer that only writes code using correct Verilog "
          "syntax.")
INSTRUCTION = (f"Answer with the complete Verilog code of module {TOP} in one ```verilog code "
               "block, and nothing else.")
REVISE = (f"Fix the design. Answer with the whole corrected module {TOP} in one ```verilog "
          "code block, and nothing else.")

CONVERSATION, FRESH = "conversation", "fresh"
REVISIONS = (CONVERSATION, FRESH)
EARLIER = ("An earlier answer to this specification was wrong; it is not shown. What the "
           "tools found in it:")

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}

_THINK = re.compile(r"<think>.*?</think>", re.S)
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.S | re.M)
_VERILOG_TAGS = {"", "verilog", "systemverilog", "sv", "v", "vhdl-verilog"}
_TOP_MODULE = re.compile(rf"\bmodule\s+{TOP}\b")
_END = re.compile(r"\bendmodule\b")


def first_messages(task: DesignTask) -> list[Message]:
    """Round 1's conversation: the system message and the task's spec with the instruction."""
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"{task.spec.rstrip()}\n\n{INSTRUCTION}"}]


def revision_messages(previous: list[Message], *, reply: str, feedback: str,
                      revise: str = CONVERSATION) -> list[Message]:
    """The next round's conversation. `conversation` (AutoChip's): the model's previous reply
    as its turn, then the tools' feedback on it and the request to fix it. `fresh`: round 1's
    conversation again, the spec's turn followed by the feedback on an earlier answer that the
    model no longer sees; measured, small models copy a reply they can see (29 of 36 later
    replies of qwen2.5-coder-0.5b repeated the previous one verbatim, sampled at 0.8)."""
    if revise == FRESH:
        spec = previous[1]["content"].split(EARLIER)[0].rstrip()
        spec = spec.removesuffix(INSTRUCTION).rstrip()
        return [previous[0], {"role": "user", "content": f"{spec}\n\n{EARLIER}\n"
                              f"{feedback.rstrip()}\n\n{INSTRUCTION}"}]
    if revise != CONVERSATION:
        raise ValueError(f"unknown revision mode {revise!r}; one of {', '.join(REVISIONS)}")
    return [*previous, {"role": "assistant", "content": reply},
            {"role": "user", "content": f"{feedback.rstrip()}\n\n{REVISE}"}]


def render_ids(tokenizer, messages: list[Message]) -> list[int]:
    """The conversation's token ids through the model's chat template, with the assistant's
    turn opened; a model without a template (a base or tiny test model) gets the turns as
    plain text, each under its role."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                            return_dict=True)["input_ids"]
        return list(ids[0] if ids and isinstance(ids[0], list) else ids)
    text = "".join(f"{m['role'].capitalize()}:\n{m['content']}\n\n" for m in messages)
    return tokenizer(text + "Assistant:\n").input_ids


def extract_module(reply: str) -> str | None:
    """The Verilog of a reply that defines `module TopModule`, or None when it defines none.

    Looks in the first fenced block that defines TopModule (any helper modules in it kept),
    else in the bare text; either way from the first `module` keyword to the last `endmodule`.
    A reply cut off before its `endmodule` still counts as a module: the compiler's error is
    better feedback than "no module"."""
    text = _THINK.sub("", reply.replace("\r\n", "\n"))
    for tag, body in _FENCE.findall(text):
        if tag.lower() in _VERILOG_TAGS and _defines_top(body):
            return _module_span(body)
    return _module_span(text) if _defines_top(text) else None


def _defines_top(text: str) -> bool:
    return _TOP_MODULE.search(strip_comments(text)) is not None


def _module_span(text: str) -> str:
    """From the first `module` (a leading comment or directive before it dropped with the
    prose) to the last `endmodule`, or to the end when there is none."""
    start = re.search(r"^\s*(`timescale|`default_nettype|module\b)", text, re.M)
    begin = start.start() if start else _TOP_MODULE.search(text).start()
    ends = list(_END.finditer(text, begin))
    end = ends[-1].end() if ends else len(text)
    return text[begin:end].strip() + "\n"

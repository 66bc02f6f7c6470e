"""Who writes the Verilog: our engine on a built-in causal LM, or an OpenAI-compatible endpoint.

Why a protocol: the loop only needs "replies to this conversation, and what they cost", so a
local model, a remote one and the tests' scripted fake are interchangeable. The local path is
our own decoding: greedy speculation with the model's own int8 copy as the draft (`self:int8`)
is lossless (the target verifies every token, so the output is the target's greedy output) and
the fastest exact path on these CPUs (docs/decode.md). Nothing leaves the machine unless the
user names an endpoint.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Protocol

from mfmaccel.errors import UserInputError
from mfmaccel.hw.llm_design.prompt import Message, render_ids

DEFAULT_DRAFT = "self:int8"
API_KEY_VAR = "OPENAI_API_KEY"


class GeneratorError(UserInputError):
    """The generator could not answer (an endpoint down or answering garbage): one line at the
    CLI, a recorded failure for one task inside a suite."""


@dataclass
class Reply:
    """One reply: its text, the tokens generating it took (what it cost, however much of it
    the extraction keeps) and its wall time."""

    text: str
    tokens: int
    seconds: float


class Generator(Protocol):
    """Replies to a conversation; `name` says which model wrote them (for the record)."""

    name: str

    def check(self) -> None:
        """Raise GeneratorError now if the generator cannot answer at all."""

    def replies(self, messages: list[Message], *, count: int, temperature: float,
                max_new_tokens: int, seed: int) -> list[Reply]:
        """`count` replies: one greedy reply at temperature 0, else sampled ones."""


class EngineGenerator:
    """A built-in causal LM through our decoding loop, greedy or sampled (top-p 0.95). One reply
    decodes at batch 1 with a lossless draft (`draft`, default the model's own int8 copy; None:
    plain decoding); k sampled replies decode together as one batch without a draft. A reply
    stops at end of turn or once its first code block closes."""

    def __init__(self, model, *, draft: str | None = DEFAULT_DRAFT, top_p: float = 0.95) -> None:
        from mfmaccel.evaluate.ppl import require_causal_lm

        require_causal_lm(model, "Verilog generation")
        self.model, self.name, self.top_p = model, model.name, top_p
        self.draft_spec = draft
        self._draft = None
        self._schedule = None

    def check(self) -> None:
        """A loaded model can always answer."""

    def replies(self, messages: list[Message], *, count: int, temperature: float,
                max_new_tokens: int, seed: int) -> list[Reply]:
        """`count` replies to `messages`, each seeded `seed + i` when sampled."""
        from mfmaccel.runtime.sampling import Sampling

        ids = render_ids(self.model.tokenizer, messages)
        room = self._room(len(ids), max_new_tokens)
        if count > 1 and temperature > 0:
            return self._batch(ids, Sampling(temperature=temperature, top_p=self.top_p,
                                             seed=seed), count, room)
        return [self._one(ids, Sampling(temperature=temperature, top_p=self.top_p,
                                        seed=seed + index), room)
                for index in range(count)]

    def _room(self, prompt_tokens: int, max_new_tokens: int) -> int:
        """New tokens that fit the context window after the prompt; a conversation that
        fills it (long feedback rounds on a small model) fails this task alone."""
        window = getattr(self.model.module.config.get_text_config(), "max_position_embeddings",
                         None) or prompt_tokens + max_new_tokens
        if prompt_tokens >= window:
            raise GeneratorError(f"the conversation ({prompt_tokens} tokens) fills "
                                 f"{self.name}'s context window of {window}")
        return min(max_new_tokens, window - prompt_tokens)

    def _one(self, ids: list[int], sampling, max_new_tokens: int) -> Reply:
        from mfmaccel.decode.speculative import speculative_generate
        from mfmaccel.runtime.engine import eos_ids

        tokenizer = self.model.tokenizer
        start = time.perf_counter()
        out = speculative_generate(
            self.model.module, self._the_draft(), ids, max_new_tokens=max_new_tokens,
            gamma=self._the_schedule(), sampling=sampling,
            eos_token_ids=eos_ids(self.model.module, tokenizer),
            should_stop=lambda tokens: _block_closed(tokenizer, tokens))
        return Reply(tokenizer.decode(out.tokens, skip_special_tokens=True), len(out.tokens),
                     time.perf_counter() - start)

    def _batch(self, ids: list[int], sampling, count: int, max_new_tokens: int) -> list[Reply]:
        """`count` sampled replies decoded as one batch (the prompt prefilled once): on these
        memory-bound CPUs k rows cost little more than one. Each reply is charged an equal
        share of the batch's wall time, so the shares add up to what the round cost."""
        from mfmaccel.runtime.engine import eos_ids, sample_rows

        tokenizer = self.model.tokenizer
        start = time.perf_counter()
        rows = sample_rows(self.model.module, ids, count=count, max_new_tokens=max_new_tokens,
                           sampling=sampling, eos_token_ids=eos_ids(self.model.module, tokenizer),
                           row_done=lambda tokens: _block_closed(tokenizer, tokens))
        share = (time.perf_counter() - start) / count
        return [Reply(tokenizer.decode(row, skip_special_tokens=True), len(row), share)
                for row in rows]

    def _the_draft(self):
        """Built once per model (the int8 copy costs seconds), reused for every reply."""
        if self._draft is None:
            from mfmaccel.decode.drafts import draft_from_spec

            self._draft = draft_from_spec(self.draft_spec, self.model.module)
        return self._draft

    def _the_schedule(self):
        """One gamma schedule across replies, so what it learns carries to the next prompt."""
        if self._schedule is None:
            from mfmaccel.decode.gamma import START_GAMMA, GammaSchedule

            self._schedule = GammaSchedule(START_GAMMA)
        return self._schedule


def _block_closed(tokenizer, tokens: list[int]) -> bool:
    """A code block has opened and closed: the rest of a reply is prose nobody reads."""
    return tokenizer.decode(tokens, skip_special_tokens=True).count("```") >= 2


class EndpointGenerator:
    """An OpenAI-compatible chat-completions endpoint (`url` up to /v1, `api_model` its model
    name) through the `openai` client, without retries. The key is $OPENAI_API_KEY, or a
    placeholder for local servers that ask for none."""

    def __init__(self, url: str, api_model: str, *, timeout: float = 120.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise UserInputError(f"--endpoint must be an http(s) URL such as "
                                 f"http://127.0.0.1:8000/v1, got '{url}'")
        if not api_model:
            raise UserInputError("--endpoint needs --api-model NAME (the endpoint's model name)")
        from openai import OpenAI

        self.url, self.name = url, api_model
        self.client = OpenAI(base_url=url, api_key=os.environ.get(API_KEY_VAR) or "none",
                             timeout=timeout, max_retries=0)

    def check(self) -> None:
        """One tiny request, so a dead or wrong endpoint is refused before the suite starts."""
        self.replies([{"role": "user", "content": "Say OK."}], count=1, temperature=0.0,
                     max_new_tokens=4, seed=0)

    def replies(self, messages: list[Message], *, count: int, temperature: float,
                max_new_tokens: int, seed: int) -> list[Reply]:
        """`count` requests (servers differ on `n`), each seeded `seed + i`."""
        return [self._one(messages, temperature=temperature, max_new_tokens=max_new_tokens,
                          seed=seed + index) for index in range(count)]

    def _one(self, messages: list[Message], *, temperature: float, max_new_tokens: int,
             seed: int) -> Reply:
        import openai

        start = time.perf_counter()
        try:
            response = self.client.chat.completions.create(
                model=self.name, messages=messages, temperature=temperature,
                max_tokens=max_new_tokens, seed=seed)
        except openai.APIStatusError as err:
            raise GeneratorError(f"endpoint {self.url} refused the request "
                                 f"(HTTP {err.status_code}): {_first_line(err.message)}") from None
        except openai.OpenAIError as err:
            raise GeneratorError(f"endpoint {self.url} does not answer: "
                                 f"{_first_line(str(err))}; check --endpoint") from None
        return Reply(self._text(response), self._tokens(response),
                     time.perf_counter() - start)

    def _text(self, response) -> str:
        """The first choice's text, or one line saying the answer was not a chat completion."""
        try:
            text = response.choices[0].message.content
        except (AttributeError, IndexError, KeyError, TypeError):
            text = None
        if not isinstance(text, str):
            raise GeneratorError(f"endpoint {self.url} answered something that is not a chat "
                                 "completion (no choices[0].message.content); check --endpoint "
                                 "and --api-model")
        return text

    @staticmethod
    def _tokens(response) -> int:
        """Completion tokens as the server counts them (0 when it does not say)."""
        usage = getattr(response, "usage", None)
        count = getattr(usage, "completion_tokens", None)
        return count if isinstance(count, int) else 0


def _first_line(text: str) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:200] if lines else "no detail"

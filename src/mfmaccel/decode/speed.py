"""Generation speed at batch 1 through a draft, timed as `evaluate.speed` times the plain loop
(`timed_speed`), so a run's decode column can show what the chosen draft gives.

prefill = prompt in -> first token out (the prompt's round); decode rate = (N - 1) tokens /
time from the first to the last new token; exactly N new tokens (end of turn ignored). A draft
is lossless under greedy decoding, so the tokens are the plain loop's.
"""

from __future__ import annotations

import torch

from mfmaccel.decode.drafts import draft_from_spec
from mfmaccel.decode.gamma import START_GAMMA, GammaSchedule
from mfmaccel.decode.speculative import speculative_generate
from mfmaccel.evaluate.speed import DEFAULT_PROMPT, SpeedResult, timed_speed
from mfmaccel.models.record import LoadedModel

DRAFT_KEY = "draft"  # LoadedModel.meta key: the draft spec a `decode` stage chose


def measure_speculative_speed(model: LoadedModel, draft_spec: str, *, prompt: str = DEFAULT_PROMPT,
                              new_tokens: int = 64, repeats: int = 3) -> SpeedResult:
    """Time greedy speculative decoding of `model` with `draft_spec` on one prompt."""
    ids = model.tokenizer(prompt).input_ids
    draft, schedule = draft_from_spec(draft_spec, model.module), GammaSchedule(START_GAMMA)

    @torch.inference_mode()
    def one_run() -> tuple[float, float]:
        out = speculative_generate(model.module, draft, ids, max_new_tokens=new_tokens,
                                   gamma=schedule)
        decode_seconds = out.seconds - out.first_token_seconds
        rate = (len(out.tokens) - 1) / decode_seconds if decode_seconds > 0 else 0.0
        return out.first_token_seconds, rate

    return timed_speed(model, f"mfmaccel+{draft_spec}", one_run, prompt_tokens=len(ids),
                       new_tokens=new_tokens, repeats=repeats)

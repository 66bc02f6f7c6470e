"""`decode`: speculative decoding for this model (layer 3 of the method), measured against our
plain greedy loop on the same prompts. The model itself is unchanged, so the runner's decode
column stays the plain loop's; this stage's own figures (speed-up, acceptance, whether every
output equals plain greedy) are in its notes and `speculative.json`."""

from __future__ import annotations

import time

import torch
from pydantic import Field

from mfmaccel.data.code import humaneval_subset, load_humaneval
from mfmaccel.decode.drafts import draft_from_spec
from mfmaccel.decode.gamma import MAX_GAMMA, START_GAMMA, GammaSchedule
from mfmaccel.decode.speculative import speculative_generate
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.codegen import code_prompt_ids
from mfmaccel.fileio import atomic_write_json
from mfmaccel.models.record import CAUSAL_LM, LoadedModel
from mfmaccel.pipeline.stage import RunContext, Stage, StageParams, StageReport
from mfmaccel.runtime.engine import eos_ids, greedy_generate


class DecodeParams(StageParams):
    draft: str = Field("lookup", description="model spec, 'lookup', 'layers:N' or 'self:int8'")
    gamma: int = Field(START_GAMMA, ge=1, le=MAX_GAMMA)
    prompts: int = Field(3, ge=1, description="HumanEval prompts to time")
    max_new_tokens: int = Field(64, ge=2)


def run(model: LoadedModel, params: DecodeParams, ctx: RunContext):
    draft = draft_from_spec(params.draft, model.module)
    stop = eos_ids(model.module, model.tokenizer)
    prompts = _fitting_prompts(model, params, ctx.seed)
    plain_seconds = spec_seconds = 0.0
    rows, schedule = [], GammaSchedule(params.gamma)  # one schedule learns across prompts
    for problem, ids in prompts:
        start = time.perf_counter()
        plain = greedy_generate(model.module, torch.tensor([ids]), params.max_new_tokens,
                                eos_token_ids=stop)
        plain_seconds += time.perf_counter() - start
        fast = speculative_generate(model.module, draft, ids, max_new_tokens=params.max_new_tokens,
                                    gamma=schedule, eos_token_ids=stop)
        spec_seconds += fast.seconds
        rows.append({"task_id": problem.task_id, "tokens": len(fast.tokens),
                     "identical": fast.tokens == plain.tokens,
                     "acceptance_rate": fast.stats.acceptance_rate,
                     "tokens_per_target_pass": fast.stats.mean_accepted_length})
        ctx.progress(len(rows), len(prompts))
    speedup = plain_seconds / spec_seconds
    summary = {"draft": params.draft, "speedup_over_plain_greedy": speedup,
               "identical_on_every_prompt": all(r["identical"] for r in rows), "prompts": rows}
    atomic_write_json(ctx.stage_dir / "speculative.json", summary)
    mean_acceptance = sum(r["acceptance_rate"] for r in rows) / len(rows)
    notes = (f"speculative with {params.draft}: {speedup:.2f}x plain greedy, acceptance "
             f"{mean_acceptance:.0%}, outputs identical: {summary['identical_on_every_prompt']}")
    return model, StageReport(artifacts=["speculative.json"], notes=notes,
                              curves={"acceptance_rate": [r["acceptance_rate"] for r in rows]})


def _fitting_prompts(model: LoadedModel, params: DecodeParams, seed: int):
    """The first `params.prompts` HumanEval prompts (fixed shuffled order) that leave room for
    `max_new_tokens` in the model's context window."""
    problems = load_humaneval()
    limit = getattr(model.module.config.get_text_config(), "max_position_embeddings", None)
    chosen = []
    for problem in humaneval_subset(problems, len(problems), seed=seed):
        ids = code_prompt_ids(model, problem)[0].tolist()
        if limit is None or len(ids) + params.max_new_tokens <= limit:
            chosen.append((problem, ids))
        if len(chosen) == params.prompts:
            return chosen
    raise UserInputError(f"fewer than {params.prompts} HumanEval prompts fit {model.name}'s "
                         f"context of {limit} tokens with {params.max_new_tokens} new ones")


STAGE = Stage(
    name="decode", run=run, params=DecodeParams, accepts=(CAUSAL_LM,), changes_model=False,
    measure_after=False,  # the model is as it was; the stage times its own decoding
    summary="speculative decoding measured against plain greedy",
)

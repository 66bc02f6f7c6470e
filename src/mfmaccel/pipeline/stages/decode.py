"""`decode`: speculative decoding for this model (layer 3 of the method). Each draft in `drafts`
is timed against our plain greedy loop on the same HumanEval prompts; the fastest one whose
outputs equal plain greedy on every prompt, if it beats the plain loop, is chosen
(`model.meta["draft"]`), and the runner then measures the decode column through it. The
weights are unchanged, so quality carries over and nothing new is saved; the figures of every
draft (speed-up, acceptance, identical outputs) and the choice are in `speculative.json`, from
which a resumed run takes the choice again."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from pydantic import Field

from mfmaccel.data.code import humaneval_subset, load_humaneval
from mfmaccel.decode.drafts import draft_from_spec
from mfmaccel.decode.gamma import MAX_GAMMA, START_GAMMA, GammaSchedule
from mfmaccel.decode.speculative import speculative_generate
from mfmaccel.decode.speed import DRAFT_KEY
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.codegen import code_prompt_ids
from mfmaccel.fileio import atomic_write_json
from mfmaccel.models.record import CAUSAL_LM, LoadedModel
from mfmaccel.pipeline.stage import SPEED_ONLY, RunContext, Stage, StageParams, StageReport
from mfmaccel.runtime.engine import eos_ids, greedy_generate

RECORD = "speculative.json"


class DecodeParams(StageParams):
    drafts: list[str] = Field(["lookup"], min_length=1,
                              description="each a model spec (NAME or NAME@QUANT), 'lookup', "
                              "'layers:N' or 'self:int8'")
    gamma: int = Field(START_GAMMA, ge=1, le=MAX_GAMMA)
    prompts: int = Field(3, ge=1, description="HumanEval prompts to time")
    max_new_tokens: int = Field(64, ge=2)


def run(model: LoadedModel, params: DecodeParams, ctx: RunContext):
    stop = eos_ids(model.module, model.tokenizer)
    prompts = _fitting_prompts(model, params, ctx.seed)
    plain_seconds, plain_tokens = 0.0, []
    for _, ids in prompts:
        start = time.perf_counter()
        plain_tokens.append(greedy_generate(model.module, torch.tensor([ids]),
                                            params.max_new_tokens, eos_token_ids=stop).tokens)
        plain_seconds += time.perf_counter() - start
    results = []
    for index, spec in enumerate(params.drafts):
        results.append(_time_draft(model, spec, params, prompts, plain_tokens, plain_seconds,
                                   stop))
        ctx.progress(index + 1, len(params.drafts))
    chosen = _fastest_lossless(results)
    atomic_write_json(ctx.stage_dir / RECORD, {"plain_seconds": plain_seconds,
                                               "drafts": results, "chosen": chosen})
    if chosen:
        model.meta[DRAFT_KEY] = chosen
    return model, StageReport(artifacts=[RECORD], notes=_notes(results, chosen),
                              curves={f"{r['draft']}/acceptance_rate":
                                      [p["acceptance_rate"] for p in r["prompts"]]
                                      for r in results})


def _time_draft(model: LoadedModel, spec: str, params: DecodeParams, prompts, plain_tokens,
                plain_seconds: float, stop: set[int]) -> dict:
    """One draft on every prompt: its speed-up over the plain loop, per-prompt acceptance, and
    whether each output equals plain greedy's."""
    draft = draft_from_spec(spec, model.module)
    seconds, rows, schedule = 0.0, [], GammaSchedule(params.gamma)  # learns across prompts
    for (problem, ids), plain in zip(prompts, plain_tokens, strict=True):
        fast = speculative_generate(model.module, draft, ids, max_new_tokens=params.max_new_tokens,
                                    gamma=schedule, eos_token_ids=stop)
        seconds += fast.seconds
        rows.append({"task_id": problem.task_id, "tokens": len(fast.tokens),
                     "identical": fast.tokens == plain,
                     "acceptance_rate": fast.stats.acceptance_rate,
                     "tokens_per_target_pass": fast.stats.mean_accepted_length})
    return {"draft": spec, "seconds": seconds, "speedup_over_plain_greedy": plain_seconds / seconds,
            "identical_on_every_prompt": all(r["identical"] for r in rows), "prompts": rows}


def _fastest_lossless(results: list[dict]) -> str | None:
    """The fastest draft whose every output equals plain greedy's, if it beats the plain loop."""
    lossless = [r for r in results if r["identical_on_every_prompt"]
                and r["speedup_over_plain_greedy"] > 1]
    return max(lossless, key=lambda r: r["speedup_over_plain_greedy"])["draft"] \
        if lossless else None


def _notes(results: list[dict], chosen: str | None) -> str:
    each = ", ".join(f"{r['draft']} {r['speedup_over_plain_greedy']:.2f}x"
                     + ("" if r["identical_on_every_prompt"] else " (outputs differ)")
                     for r in results)
    choice = f"chosen: {chosen}" if chosen else "none beats the plain loop losslessly"
    return f"against plain greedy: {each}; {choice}"


def reapply(model: LoadedModel, stage_dir: Path) -> LoadedModel:
    """The stage's choice of draft, taken again on resume."""
    chosen = json.loads((stage_dir / RECORD).read_text())["chosen"]
    if chosen:
        model.meta[DRAFT_KEY] = chosen
    return model


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
    measure_after=SPEED_ONLY, reapply=reapply,
    summary="drafts timed against plain greedy; the fastest lossless one chosen",
)

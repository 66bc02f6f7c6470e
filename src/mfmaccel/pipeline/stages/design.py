"""`design`: the run's current model as a hardware designer (issue 26's LLM-aided route): it
writes Verilog for VerilogEval v2 specs (or our own units'), which is linted, simulated against
the reference in the sandbox, fed back while it fails (AutoChip-style), and a passing design
synthesized. The model is unchanged. Artifact: `design.json` (`hw.llm_design.loop.SuiteResult`:
per task pass, round of the first pass, tokens, seconds, verdict, lint, cells; pass@1 and pass
with feedback)."""

from __future__ import annotations

from pydantic import Field

from mfmaccel.hw.llm_design.generators import DEFAULT_DRAFT
from mfmaccel.hw.llm_design.loop import DEFAULT_MAX_NEW_TOKENS, LoopSettings
from mfmaccel.hw.llm_design.run import design_run, make_generator, select_tasks, summary_line
from mfmaccel.models.record import CAUSAL_LM, LoadedModel
from mfmaccel.pipeline.stage import RunContext, Stage, StageParams, StageReport


class DesignParams(StageParams):
    suite: str = Field("verilog-eval", description="the task suite: verilog-eval or "
                                                  "mfmaccel-units (our hw.rtl units)")
    problems: str | None = Field("5", description="the first N problems, or a comma list of "
                                                  "names (null: all 156)")
    data: str | None = Field(None, description="the verilog-eval-v2 folder (null: "
                                               "$MFMACCEL_VERILOG_EVAL or ../shared/data)")
    rounds: int = Field(3, ge=1, description="rounds at most (1: no feedback)")
    candidates: int = Field(1, ge=1, description="replies per round; the best is kept")
    temperature: float = Field(0.0, ge=0, description="0: greedy (needs candidates 1)")
    greedy_first: bool = Field(False, description="round 1's first reply greedy, the rest "
                                                  "sampled at the temperature")
    revise: str = Field("conversation", description="a later round: 'conversation' (the "
                        "previous answer and its feedback) or 'fresh' (the spec and feedback)")
    max_new_tokens: int = Field(DEFAULT_MAX_NEW_TOKENS, ge=1)
    draft: str | None = Field(DEFAULT_DRAFT, description="a lossless draft (null: plain)")


def run(model: LoadedModel, params: DesignParams, ctx: RunContext):
    settings = LoopSettings(params.rounds, params.candidates, params.temperature,
                            params.max_new_tokens, ctx.seed, params.greedy_first,
                            params.revise)
    tasks = select_tasks(task=None, suite=params.suite, problems=params.problems,
                         data=params.data)
    generator = make_generator(model=model, draft=params.draft)
    found = design_run(tasks, generator, settings, progress=ctx.progress)
    found.save(ctx.stage_dir / "design.json")
    return model, StageReport(artifacts=["design.json"], notes=summary_line(found))


STAGE = Stage(
    name="design", run=run, params=DesignParams, accepts=(CAUSAL_LM,),
    changes_model=False, measure_after=False,
    summary="the model writes Verilog from specs: pass@1 and pass with feedback (VerilogEval v2)",
)

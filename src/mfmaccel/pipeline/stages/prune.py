"""`prune`: remove whole blocks, MLP channels and key/value groups (layer 2 of the method).
Artifact: `pruning.json` (importance of every block, what was removed, parameters before and
after)."""

from __future__ import annotations

from pydantic import Field

from mfmaccel.compress.recover import prune_and_recover
from mfmaccel.models.record import CAUSAL_LM, VLM, LoadedModel
from mfmaccel.pipeline.stage import RunContext, Stage, StageParams, StageReport


class PruneParams(StageParams):
    blocks: int = Field(0, ge=0, description="transformer blocks to remove")
    mlp_fraction: float = Field(0.0, ge=0, lt=1, description="of MLP channels, every block")
    kv_groups: int = Field(0, ge=0, description="key/value groups to remove, every block")
    calib_tokens: int = Field(2048, ge=64)
    recover_steps: int = Field(0, ge=0, description="LoRA distillation steps after pruning")
    recover_tokens: int = Field(32768, ge=512)


def run(model: LoadedModel, params: PruneParams, ctx: RunContext):
    model, report = prune_and_recover(
        model, calib_tokens=params.calib_tokens, blocks=params.blocks,
        mlp_fraction=params.mlp_fraction, kv_groups=params.kv_groups,
        recover_steps=params.recover_steps, recover_tokens=params.recover_tokens,
        progress=ctx.progress)
    report.save(ctx.stage_dir / "pruning.json")
    before, after = report.params
    notes = (f"removed blocks {report.removed_blocks}; parameters {before:,} -> {after:,} "
             f"({1 - after / before:.1%} fewer)")
    curves = {"block_importance": report.block_importance}
    if report.recovery:
        notes += f"; recovered with {report.recovery['steps']} LoRA distillation steps"
        curves["recovery/loss"] = report.recovery["losses"]
    return model, StageReport(artifacts=["pruning.json"], notes=notes, curves=curves)


STAGE = Stage(
    name="prune", run=run, params=PruneParams, accepts=(CAUSAL_LM, VLM),
    summary="structural pruning: blocks, MLP channels, key/value groups",
)
